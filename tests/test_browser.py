"""The doodle page in a real browser: Debian's Chromium driven by Playwright, headless and
kept off the network. Draws with the mouse (and a pen), waits for three guesses, checks the
strokes the page sent, and saves screenshots under test-artifacts/."""

from __future__ import annotations

import json
import math
import urllib.request

import pytest
from browser import ARTIFACTS, CHROMIUM, SKIP_REASON, chromium_page, served
from doodle_model import tiny_export

if not CHROMIUM.is_file():
    pytest.skip(SKIP_REASON, allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser test skipped: the playwright package "
                               "is not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def server_url():
    """The demo app (the tiny model's ONNX export) on a free loopback port, served by uvicorn in a thread."""
    from nnlab.serve.app import create_app

    with served(create_app(tiny_export())) as url:
        yield url


@pytest.fixture()
def page(browser, server_url):
    with chromium_page(browser, server_url) as page:
        yield page


def predict_requests(page) -> list[dict]:
    sent: list[dict] = []
    page.on("request", lambda r: r.method == "POST" and r.url.endswith("/api/predict")
            and sent.append(r.post_data_json))
    return sent


def shown_guesses(page) -> list[tuple[str, str]]:
    return page.eval_on_selector_all("#guesses li.filled", "els => els.map(e => "
                                     "[e.querySelector('.word').textContent, e.querySelector('.pct').textContent])")


def wait_for_three_guesses(page) -> None:
    page.wait_for_function("document.querySelectorAll('#guesses li.filled').length === 3", timeout=20_000)


def settle(page, sent: list, quiet_ms: int = 700) -> None:
    """Wait until no new guess request has been sent for `quiet_ms`."""
    count = -1
    while count != len(sent):
        count = len(sent)
        page.wait_for_timeout(quiet_ms)


def test_draw_and_get_three_guesses(page, server_url):
    sent = predict_requests(page)
    page.goto(server_url + "/")
    page.wait_for_function("document.getElementById('suggest').textContent !== '…'")  # classes loaded
    assert "backend: onnxruntime" in page.text_content("#backend")
    box = page.locator("#canvas").bounding_box()
    cx, cy, r = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"] * 0.3

    # a circle in one stroke, then a line across it, with mouse moves
    page.mouse.move(cx + r, cy)
    page.mouse.down()
    for k in range(1, 41):
        a = 2 * math.pi * k / 40
        page.mouse.move(cx + r * math.cos(a), cy + r * math.sin(a), steps=2)
    page.mouse.up()
    page.mouse.move(cx - r, cy - r)
    page.mouse.down()
    page.mouse.move(cx + r, cy + r, steps=20)
    page.mouse.up()

    wait_for_three_guesses(page)
    settle(page, sent)
    guesses = shown_guesses(page)
    assert len(guesses) == 3 and all(word and pct.endswith("%") for word, pct in guesses)

    # the request carried the strokes: Google's raw format, x/y in the canvas' 0..256 board, t in ms
    assert sent, "no /api/predict request was sent"
    last = sent[-1]
    assert last["top_k"] == 3 and len(last["drawing"]) == 2
    circle, stroke = last["drawing"]
    for s in (circle, stroke):
        assert len(s) == 3 and len(s[0]) == len(s[1]) == len(s[2]) >= 2
        assert all(0 <= v <= 256 for v in s[0] + s[1])
        assert s[2] == sorted(s[2])
    assert len(circle[0]) >= 30 and circle[2][-1] > 0
    assert circle[0][0] == pytest.approx(128 + 0.3 * 256, abs=2) and circle[1][0] == pytest.approx(128, abs=2)
    assert stroke[2][0] >= circle[2][-1]  # t counts from the drawing's first point
    assert len(sent) >= 2  # guesses were updated while drawing, not only at the end

    # the guesses shown are the server's answer to that request
    req = urllib.request.Request(server_url + "/api/predict", data=json.dumps(last).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as answer:
        expected = json.load(answer)["predictions"]
    assert [w for w, _ in guesses] == [p["word"] for p in expected]
    assert [p for _, p in guesses] == [f"{100 * p['probability']:.1f}%" for p in expected]
    assert page.text_content("#verdict").strip() != "Waiting for a doodle…"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser.png"))

    # undo removes the line; clear empties the board and the guesses
    page.click("#undo")
    settle(page, sent)
    assert len(sent[-1]["drawing"]) == 1
    page.click("#clear")
    page.wait_for_function("document.querySelectorAll('#guesses li.filled').length === 0")
    assert page.is_disabled("#undo") and page.is_disabled("#clear")
    assert not page.problems, page.problems


def test_pen_strokes_are_drawn_too(page, server_url):
    sent = predict_requests(page)
    page.goto(server_url + "/")
    page.wait_for_function("document.getElementById('suggest').textContent !== '…'")
    box = page.locator("#canvas").bounding_box()
    points = [(box["x"] + box["width"] * (0.2 + 0.6 * k / 20), box["y"] + box["height"] * 0.5) for k in range(21)]
    page.evaluate("""(points) => {
        const canvas = document.getElementById('canvas');
        const fire = (type, [x, y]) => canvas.dispatchEvent(new PointerEvent(type, {
            pointerId: 7, pointerType: 'pen', isPrimary: true, clientX: x, clientY: y, pressure: 0.5,
            bubbles: true, cancelable: true}));
        fire('pointerdown', points[0]);
        for (const p of points.slice(1)) fire('pointermove', p);
        fire('pointerup', points[points.length - 1]);
    }""", points)
    wait_for_three_guesses(page)
    settle(page, sent)
    (stroke,) = sent[-1]["drawing"]
    assert len(stroke[0]) == 21 and stroke[0][0] == pytest.approx(0.2 * 256, abs=1)
    assert not page.problems, page.problems


def test_show_me_one(page, server_url):
    page.goto(server_url + "/")
    page.wait_for_function("document.getElementById('suggest').textContent !== '…'")
    with page.expect_response(lambda r: r.url.endswith("/api/sample")) as info:
        page.click("#sample")
    sample = info.value.json()
    wait_for_three_guesses(page)
    assert page.is_visible("#sample-label") and sample["word"] in page.text_content("#sample-label")
    assert [w for w, _ in shown_guesses(page)] == [p["word"] for p in sample["predictions"]]
    verdict = page.text_content("#verdict")
    assert ("✓ right" in verdict) == (sample["predictions"][0]["word"] == sample["word"])
    # ink on the canvas
    inked = page.evaluate("""() => {
        const c = document.getElementById('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; }""")
    assert inked > 200
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-sample.png"))
    assert not page.problems, page.problems
