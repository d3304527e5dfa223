"""The doodle demo's API through FastAPI's TestClient: answers, raw strokes, every limit and
malformed body with its status code, the two backends, micro-batching, and `nnlab serve`."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
from cli_runner import free_port, start_server
from doodle_model import real_drawings, tiny_export, tiny_run
from fastapi.testclient import TestClient

from nnlab.serve.app import MAX_BODY_BYTES, MAX_POINTS, MAX_STROKES, create_app
from nnlab.strokes.simplify import simplify_strokes

WORDS = ("cat", "bicycle", "house", "star", "The Eiffel Tower", "snowflake")


@pytest.fixture(scope="module")
def onnx_client() -> TestClient:
    return TestClient(create_app(tiny_export()))


@pytest.fixture(scope="module")
def torch_client() -> TestClient:
    return TestClient(create_app(tiny_run()))


@pytest.fixture(scope="module")
def classes() -> list[str]:
    return (tiny_run() / "classes.txt").read_text().splitlines()


def post(client: TestClient, body) -> tuple[int, dict]:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    r = client.post("/api/predict", content=content, headers={"content-type": "application/json"})
    return r.status_code, r.json()


def line(n: int, x0: int = 0) -> list[list[int]]:
    return [[(x0 + i) % 256 for i in range(n)], [(3 * i) % 256 for i in range(n)]]


# --------------------------------------------------------------------------- good requests


def test_predict_a_real_drawing(onnx_client, classes, shared_data):
    row = real_drawings(shared_data, ("cat",), 1)[0]
    status, body = post(onnx_client, {"drawing": row["drawing"], "top_k": 3})
    assert status == 200
    preds = body["predictions"]
    assert [set(p) for p in preds] == [{"word", "probability"}] * 3
    assert all(p["word"] in classes for p in preds)
    probs = [p["probability"] for p in preds]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    status, body = post(onnx_client, {"drawing": row["drawing"]})  # top_k defaults to 3
    assert status == 200 and len(body["predictions"]) == 3
    status, body = post(onnx_client, {"drawing": row["drawing"], "top_k": len(classes)})
    assert status == 200 and sum(p["probability"] for p in body["predictions"]) == pytest.approx(1, abs=1e-4)


def test_raw_strokes_with_time_are_simplified_by_the_server(onnx_client, shared_data):
    """A raw drawing (float screen coordinates and t) gets exactly the answer of its simplified
    form, for drawings where our simplification reproduces Google's file point for point."""
    raw_dir, simp_dir = shared_data / "quickdraw" / "raw", shared_data / "quickdraw" / "simplified"
    checked = 0
    for word in WORDS:
        simplified = {r["key_id"]: r["drawing"] for r in map(json.loads, (simp_dir / f"{word}.ndjson").open())}
        for raw in map(json.loads, (raw_dir / f"{word}.ndjson").open()):
            google = simplified.get(raw["key_id"])
            strokes = [np.asarray(s, dtype=np.float64).T for s in raw["drawing"]]
            ours = [s.T.tolist() for s in simplify_strokes(strokes)]
            if google is None or ours != google or len(json.dumps(raw)) > MAX_BODY_BYTES:
                continue
            assert len(raw["drawing"][0]) == 3  # x, y and t
            status_raw, body_raw = post(onnx_client, {"drawing": raw["drawing"], "top_k": 5})
            status_simp, body_simp = post(onnx_client, {"drawing": google, "top_k": 5})
            assert status_raw == status_simp == 200
            assert body_raw == body_simp
            checked += 1
            break
    assert checked >= 4


def test_raw_coordinates_without_time_are_simplified_too(onnx_client):
    # floats and coordinates beyond 255 (screen pixels): the server aligns and scales them into
    # 0..255 as Google does, so a shifted, enlarged copy is the same drawing
    small = [[[0, 50, 100], [0, 100, 0], [0, 10, 20]], [[20, 80], [60, 60], [30, 40]]]
    big = [[[10.5 + 4 * x for x in s[0]], [7.25 + 4 * y for y in s[1]]] for s in small]
    as_is = [s[:2] for s in small]  # integers in 0..255 without t: taken as already simplified
    assert post(onnx_client, {"drawing": big})[1] == post(onnx_client, {"drawing": small})[1]
    assert post(onnx_client, {"drawing": as_is})[1] != post(onnx_client, {"drawing": small})[1]


def test_a_single_point_is_a_drawing(onnx_client):
    assert post(onnx_client, {"drawing": [[[12.5], [40.0], [0]]]})[0] == 200
    assert post(onnx_client, {"drawing": [[[12], [40]]]})[0] == 200


def test_limits_are_inclusive(onnx_client):
    assert post(onnx_client, {"drawing": [line(2, k) for k in range(MAX_STROKES)]})[0] == 200
    assert post(onnx_client, {"drawing": [line(MAX_POINTS // 4)] * 4})[0] == 200


# --------------------------------------------------------------------------- limits and malformed bodies


def test_body_over_256_kb_is_413_by_content_length(onnx_client):
    body = json.dumps({"drawing": [line(3)], "pad": "x" * MAX_BODY_BYTES})
    assert len(body) > MAX_BODY_BYTES
    status, answer = post(onnx_client, body)
    assert status == 413 and "256 KB" in answer["detail"]


def test_body_over_256_kb_is_413_by_bytes_read_when_chunked(onnx_client):
    chunks = [b'{"drawing": [[[1, 2], [3, 4]]], "pad": "'] + [b"x" * 65536] * 5 + [b'"}']
    r = onnx_client.post("/api/predict", content=iter(chunks), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers  # chunked: only the bytes read can tell
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    small = [b'{"drawing": [[[1, 2], ', b'[3, 4]]]}']  # a chunked body under the limit is fine
    r = onnx_client.post("/api/predict", content=iter(small), headers={"content-type": "application/json"})
    assert r.status_code == 200


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"drawing": [line(2, k) for k in range(MAX_STROKES + 1)]}, 422, r"257 strokes; at most 256"),
    ({"drawing": [line(MAX_POINTS // 4)] * 4 + [line(1)]}, 422, r"10001 points; at most 10000"),
    ('{"drawing": [[[1, 2], [3, 4]]', 422, r"not valid JSON"),
    ("", 422, r"body is empty"),
    ("[1, 2]", 422, r"must be a JSON object"),
    ({"drawing": [[[1, 2, 3], [3, 4]]]}, 422, r"drawing\.0: x, y have different lengths \(3, 2\)"),
    ({"drawing": [[[1, 2], [3, 4], [0]]]}, 422, r"x, y, t have different lengths"),
    ('{"drawing": [[[1, NaN], [3, 4]]]}', 422, r"drawing\.0\.0\.1: NaN and infinity"),
    ('{"drawing": [[[1, 2], [3, Infinity]]]}', 422, r"NaN and infinity"),
    ({"drawing": [[[1, 2], [3, "4"]]]}, 422, r"drawing\.0\.1\.1: Input should be a valid number"),
    ({"drawing": [[[1, True], [3, 4]]]}, 422, r"drawing\.0\.0\.1"),
    ({"drawing": []}, 422, r"drawing: the drawing has no strokes"),
    ({"drawing": [[[], []]]}, 422, r"drawing\.0: a stroke has no points"),
    ({}, 422, r"drawing: Field required"),
    ({"drawing": [[1, 2], [3, 4]]}, 422, r"drawing\.0\.0: Input should be a valid (list|array)"),
    ({"drawing": [[[[1], [2]], [[3], [4]]]]}, 422, r"drawing\.0\.0\.0: Input should be a valid number"),
    ({"drawing": [[[1, 2]]]}, 422, r"a stroke is \[\[x\.\.\.\], \[y\.\.\.\]\]"),
    ({"drawing": [[[1], [2], [3], [4]]]}, 422, r"got 4 lists"),
    ({"drawing": "cat"}, 422, r"drawing: Input should be a valid (list|array)"),
    ({"drawing": [line(3)], "top_k": 0}, 422, r"top_k: Input should be greater than or equal to 1"),
    ({"drawing": [line(3)], "top_k": 13}, 422, r"top_k: must be between 1 and 12"),
    ({"drawing": [line(3)], "top_k": "3"}, 422, r"top_k: Input should be a valid integer"),
    ({"drawing": [line(3)], "top_k": 2.5}, 422, r"top_k"),
    ({"drawing": [line(3)], "topk": 3}, 422, r"topk: unknown field"),
])
def test_malformed_requests(onnx_client, body, status, message):
    got, answer = post(onnx_client, body)
    assert got == status, answer
    assert re.search(message, answer["detail"]), answer["detail"]


def test_errors_are_listed_and_capped(onnx_client):
    strokes = [[[1, 2], [3]]] * 40
    status, answer = post(onnx_client, {"drawing": strokes})
    assert status == 422 and len(answer["errors"]) == 40 and answer["detail"].endswith("and 35 more")


def test_a_large_valid_body_is_accepted(onnx_client, shared_data):
    raw = json.loads((shared_data / "quickdraw" / "raw" / "cat.ndjson").open().readline())["drawing"]
    body = json.dumps({"drawing": raw})
    assert len(body) < MAX_BODY_BYTES
    assert post(onnx_client, body)[0] == 200


# --------------------------------------------------------------------------- other endpoints


def test_classes_and_health(onnx_client, torch_client, classes):
    assert onnx_client.get("/api/classes").json() == {"classes": classes}
    h = onnx_client.get("/api/health").json()
    assert h["status"] == "ok" and h["backend"] == "onnxruntime" and h["classes"] == 12
    assert h["preprocessing"]["image_size"] == 32 and h["limits"]["points"] == MAX_POINTS
    assert torch_client.get("/api/health").json()["backend"] == "torch"


def test_sample_is_a_validation_drawing_with_the_models_guess(onnx_client, torch_client, classes):
    for client in (onnx_client, torch_client):
        seen = set()
        for _ in range(6):
            r = client.get("/api/sample")
            assert r.status_code == 200
            s = r.json()
            assert s["word"] in classes and len(s["predictions"]) == 3
            pts = np.concatenate([np.asarray(stroke).T for stroke in s["drawing"]])
            assert pts.min() >= 0 and pts.max() <= 255
            # the guess shown is the model's guess for that very drawing
            status, again = post(client, {"drawing": s["drawing"]})
            assert status == 200 and again["predictions"] == s["predictions"]
            seen.add(s["key_id"])
        assert len(seen) > 1  # random, not always the same drawing


def test_page_and_static_files_are_self_contained(onnx_client):
    r = onnx_client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    assert '<canvas id="canvas"' in html and 'id="undo"' in html and 'id="clear"' in html and 'id="sample"' in html
    for name in ("app.js", "style.css"):
        asset = onnx_client.get(f"/static/{name}")
        assert asset.status_code == 200 and len(asset.text) > 500
        html += asset.text
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", html) and "@import" not in html
    assert "pointerdown" in html and "/api/predict" in html and "/api/sample" in html


def test_export_and_run_backends_agree(onnx_client, torch_client, shared_data):
    for row in real_drawings(shared_data, WORDS, 3):
        a = post(onnx_client, {"drawing": row["drawing"], "top_k": 5})[1]["predictions"]
        b = post(torch_client, {"drawing": row["drawing"], "top_k": 5})[1]["predictions"]
        assert [p["word"] for p in a][:3] == [p["word"] for p in b][:3]
        assert np.allclose([p["probability"] for p in a], [p["probability"] for p in b], atol=1e-5)


def test_concurrent_requests_are_batched_without_mixing_answers(shared_data):
    """Many requests at once go through the model in shared batches; each gets its own answer."""
    import httpx

    app = create_app(tiny_export())
    rows = real_drawings(shared_data, WORDS, 5)
    with TestClient(app) as client:
        expected = [post(client, {"drawing": r["drawing"]})[1] for r in rows]
    calls = []
    original = app.state.model.logits
    app.state.model.logits = lambda images: calls.append(len(images)) or original(images)

    async def all_at_once():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(*(client.post("/api/predict", json={"drawing": r["drawing"]})
                                          for r in rows))

    answers = asyncio.run(all_at_once())
    assert [a.json() for a in answers] == expected
    assert sum(calls) == len(rows) and max(calls) > 1


# --------------------------------------------------------------------------- the command


def test_serve_with_two_workers_answers_and_stops_both_on_ctrl_c(tmp_path):
    """The process boundary is what this tests: `nnlab serve --workers 2` in a subprocess, on loopback only."""
    port = free_port()
    proc, health = start_server(tiny_export(), "--workers", 2, "--no-access-log", port=port)
    try:
        assert health["backend"] == "onnxruntime"
        listening = _listening_addresses(port)
        assert listening is None or listening == {"0100007F"}  # both workers' sockets: 127.0.0.1, not 0.0.0.0
        supervisor = psutil.Process(proc.pid)
        workers = [p for p in supervisor.children(recursive=True) if "multiprocessing.spawn" in " ".join(p.cmdline())]
        assert len(workers) == 2
        assert supervisor.memory_info().rss < 200 * 2**20  # the supervisor holds no model (and no torch)
        body = json.dumps({"drawing": [[[0, 100, 200], [0, 50, 255]]], "top_k": 3}).encode()
        for _ in range(20):  # a fresh connection each: the kernel hands them to either worker
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/predict", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as r:
                assert r.status == 200 and len(json.loads(r.read())["predictions"]) == 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert f"at http://127.0.0.1:{port}/" in proc.stdout.read()
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_command_rejects_what_it_cannot_serve(tmp_path, cli):
    proc = cli("serve", tmp_path, ok=False)
    assert proc.returncode == 2 and "neither a run directory" in proc.stderr


def _listening_addresses(port: int) -> set[str] | None:
    """Hex IPv4 addresses listening on `port` (Linux /proc/net/tcp), or None elsewhere."""
    table = Path("/proc/net/tcp")
    if not table.is_file():
        return None
    found = set()
    for row in table.read_text().splitlines()[1:]:
        local, state = row.split()[1], row.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":
            found.add(address)
    return found
