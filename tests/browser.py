"""Shared by the browser tests (not a test module itself): an app served by uvicorn in a thread on a
free loopback port, one headless Chromium (Playwright) per module, and pages in it that can reach
nothing but the app."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cli_runner import free_port

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
                 "--metrics-recording-only", "--no-default-browser-check"]
SKIP_REASON = f"browser test skipped: no Chromium at {CHROMIUM} (install it with `apt-get install chromium`)"


@contextmanager
def served(app) -> Iterator[str]:
    """`app` served by uvicorn in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def chromium():
    """One headless Chromium for a module's tests (starting it takes seconds); each test opens its own
    page in a fresh context (no cookies, storage or cache of another test)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def chromium_page(browser, server_url: str):
    """A page of `browser` in a fresh context; `page.problems` collects console errors and failed requests."""
    context = browser.new_context(viewport={"width": 1180, "height": 780}, device_scale_factor=1,
                                  bypass_csp=True)  # the page forbids eval, which Playwright's wait_for_function uses
    try:
        # nothing but the demo server may be reached
        context.route(lambda url: not url.startswith(server_url), lambda route: route.abort())
        page = context.new_page()
        page.problems = []
        page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
        page.on("pageerror", lambda e: page.problems.append(str(e)))
        page.on("requestfailed", lambda r: page.problems.append(f"failed: {r.url}"))
        yield page
    finally:
        context.close()
