"""The doodle demo under hostile requests: a worst-case valid drawing costs bounded work and does
not hold up /api/health, only JSON bodies are read, huge finite coordinates are 422, every answer
carries nosniff and the CSP, the docs are off by default, the Host check."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
from cli_runner import free_port
from doodle_model import tiny_export
from fastapi.testclient import TestClient

from nnlab.serve.app import create_app
from nnlab.serve.preprocess import LIGHT_INK, MAX_INK, Busy, Preprocessor
from nnlab.strokes.simplify import scaled_ink_length, simplify_strokes


def zigzag(n: int = 10_000) -> list[list[list[float]]]:
    """The worst-case valid drawing of the issue: n points of a zigzag with fractional x (raw, so
    the server simplifies it), about 145 KB of JSON."""
    return [[[round(0.1 * i + 0.05, 2) for i in range(n)], [0.0 if i % 2 == 0 else 1000.0 for i in range(n)]]]


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(tiny_export()))


def post(client: TestClient, body, content_type: str = "application/json"):
    return client.post("/api/predict", content=json.dumps(body), headers={"content-type": content_type})


def test_worst_case_drawing_is_bounded_and_health_answers_meanwhile(client):
    drawing = zigzag()
    strokes = [np.array(s, dtype=np.float64).T for s in drawing]
    assert scaled_ink_length(strokes) > 10 * MAX_INK  # Google's 1 px resampling: millions of points
    done: list[str] = []

    def hostile() -> None:
        r = post(client, {"drawing": drawing})
        done.append(f"hostile {r.status_code}")

    threads = [threading.Thread(target=hostile) for _ in range(2)]
    for t in threads:
        t.start()
    threading.Event().wait(0.05)
    r = client.get("/api/health")
    done.append(f"health {r.status_code}")
    for t in threads:
        t.join()
    # before: the numba kernels held the GIL for ~23 s per request and health came last
    assert done[0] == "health 200" and sorted(done[1:]) == ["hostile 200"] * 2, done


def test_bounded_simplification_keeps_real_drawings_as_google(shared_data):
    rows = [json.loads(line) for line in open(shared_data / "quickdraw" / "raw" / "cat.ndjson")]
    for row in rows:
        strokes = [np.array(s[:2], dtype=np.float64).T for s in row["drawing"]]
        assert scaled_ink_length(strokes) < LIGHT_INK
        exact = simplify_strokes(strokes)
        bounded = simplify_strokes(strokes, max_points=MAX_INK)
        assert all(np.array_equal(a, b) for a, b in zip(exact, bounded, strict=True))
    coarse = simplify_strokes([np.array(s).T for s in zigzag(2_000)], max_points=1_000)
    assert sum(map(len, coarse)) <= 1_000 + 2


def test_real_raw_drawings_are_left_to_the_batch_and_simplified_ones_taken_as_they_are(shared_data):
    """A real raw drawing leaves the event loop checked, with its simplification for the guesser's thread (no
    thread of its own); a simplified one is ready as it is; the batch's answer equals the simplified drawing's."""
    from nnlab.inference.models.doodle import load_doodle_model
    from nnlab.serve.batching import MicroBatcher

    row = json.loads(open(shared_data / "quickdraw" / "raw" / "cat.ndjson").readline())
    raw = [np.array(s, dtype=np.float64).T for s in row["drawing"]]
    prep = Preprocessor()
    threads_before = set(threading.enumerate())
    strokes, finish = asyncio.run(prep(raw))
    assert finish is simplify_strokes and all(np.array_equal(a, b) for a, b in zip(strokes, raw, strict=True))
    simplified = simplify_strokes(raw)
    ready, none = asyncio.run(prep(simplified))
    assert none is None and all(a.dtype == np.int32 and np.array_equal(a, b) for a, b in zip(ready, simplified))
    assert not [t for t in set(threading.enumerate()) - threads_before if t.name.startswith("nnlab-simplify")]
    prep.close()
    model = load_doodle_model(tiny_export())
    batcher = MicroBatcher(model)

    async def both():
        return await batcher.probabilities(strokes, finish), await batcher.probabilities(ready)

    try:
        from_raw, from_simplified = asyncio.run(both())
    finally:
        batcher.close()
    assert np.array_equal(from_raw, from_simplified) and np.array_equal(from_raw, model.probabilities([ready])[0])


def test_too_many_long_drawings_pending_is_503():
    prep = Preprocessor(max_heavy_pending=0)
    strokes = [np.array(s).T for s in zigzag(500)]
    with pytest.raises(Busy, match="retry later"):
        asyncio.run(prep(strokes))
    prep.close()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_only_json_bodies_are_read(client, content_type):
    r = post(client, {"drawing": [[[0, 1], [0, 1]]]}, content_type)
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    assert post(client, {"drawing": [[[0, 1], [0, 1]]]}, "application/json; charset=utf-8").status_code == 200


@pytest.mark.parametrize("value", [-1e308, 1.7e308, 2e9])
def test_huge_finite_coordinates_are_422(client, value):
    r = post(client, {"drawing": [[[value, 3.5], [0.5, 2.0]]]})
    assert r.status_code == 422, r.text
    assert "drawing.0.0.0" in r.json()["detail"]


def test_every_answer_has_nosniff_and_csp_and_docs_are_off(client):
    answers = [client.get("/api/health"), client.get("/nothing"), client.get("/static/app.js"),
               post(client, {"drawing": "x"}), client.get("/api/docs")]
    for r in answers:
        assert r.headers["x-content-type-options"] == "nosniff", r.url
        assert "default-src 'self'" in r.headers["content-security-policy"], r.url
    assert answers[-1].status_code == 404  # Swagger UI loads from a CDN: off unless docs=True
    big = client.post("/api/predict", content=b"x" * (300 * 1024), headers={"content-type": "application/json"})
    assert big.status_code == 413 and big.headers["x-content-type-options"] == "nosniff"


def test_a_body_that_never_arrives_is_408(monkeypatch):
    import nnlab.serve.app as app_mod

    monkeypatch.setattr(app_mod, "BODY_TIMEOUT_S", 0.2)
    sent: list[dict] = []

    async def receive():
        await asyncio.sleep(5)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", b"application/json")]}
    asyncio.run(app_mod.BodyLimit(None)(scope, receive, send))
    assert sent[0]["status"] == 408  # before: the handler waited for the body for ever


def test_allowed_hosts():
    app = create_app(tiny_export(), allowed_hosts=["demo.example"])
    assert TestClient(app, base_url="http://demo.example").get("/api/health").status_code == 200
    assert TestClient(app, base_url="http://evil.example").get("/api/health").status_code == 400


async def _ok_app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def real_server(app=_ok_app, **limits):
    """uvicorn with GuardedProtocol (`limits` override its class attributes) on a free loopback port,
    in a thread: yields the port."""
    import uvicorn

    from nnlab.serve.hardening import GuardedProtocol

    port = free_port()
    protocol = type("Quick", (limits.pop("protocol", GuardedProtocol),), limits)  # the class itself stays as it is
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol, log_level="error",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 10
        while not server.started and time.time() < deadline:
            time.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def answer(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (or `timeout` passes)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _slow_head_is_closed(protocol, timeout_s: float = 0.5) -> bool:
    """Whether a server with `protocol` closes a connection whose headers trickle in (slowloris)."""
    with real_server(protocol=protocol, head_timeout_s=timeout_s) as port:
        with socket.create_connection(("127.0.0.1", port)) as ok:  # a normal request still works
            ok.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"200" in ok.recv(1024)
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.settimeout(0.05)  # 42 bytes: ~2 s of trickling, 4 head timeouts
            closed = False
            for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10:  # never ends its head
                try:
                    slow.sendall(bytes([byte]))
                    if slow.recv(1) == b"":
                        closed = True
                        break
                except (socket.timeout, BlockingIOError):
                    continue
                except OSError:
                    closed = True
                    break
            return closed


def test_a_request_head_that_trickles_in_is_closed():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from nnlab.serve.hardening import UVICORN_LIMITS, GuardedProtocol

    class Plain(HttpToolsProtocol):
        head_timeout_s = 0.0  # unused: uvicorn's own protocol has no head timeout

    assert UVICORN_LIMITS["http"] is GuardedProtocol
    assert not _slow_head_is_closed(Plain)  # before: ~2 s of trickling kept the connection open
    assert _slow_head_is_closed(GuardedProtocol)


def test_a_responses_head_and_body_leave_in_one_send():
    """uvicorn writes a response's head and body apart; `CoalescedWrites` sends what one turn of the event loop
    wrote at once, and what is pending before the connection closes."""
    from nnlab.serve.hardening import CoalescedWrites

    class Transport:
        def __init__(self):
            self.sent, self.closed = [], False

        def write(self, data):
            self.sent.append(data)

        def is_closing(self):
            return self.closed

        def close(self):
            self.closed = True

        def get_extra_info(self, name):
            return ("127.0.0.1", 5555)

    async def main():
        transport = Transport()
        writes = CoalescedWrites(transport, asyncio.get_running_loop())
        writes.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        writes.write(b"ok")
        assert transport.sent == []
        await asyncio.sleep(0)
        assert transport.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
        writes.write(b"bye")
        writes.close()
        assert transport.sent[-1] == b"bye" and transport.closed
        assert writes.get_extra_info("peername") == ("127.0.0.1", 5555)  # the rest is the transport's

    asyncio.run(main())


def test_huge_request_heads_are_431_at_once():
    import psutil

    with real_server(max_head_bytes=4096) as port:
        with socket.create_connection(("127.0.0.1", port)) as ok:  # a head just under the limit: 200
            ok.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 3900 + b"\r\n\r\n")
            assert answer(ok, 1).startswith(b"HTTP/1.1 200")
        # pipelined: two small requests in one packet are two answers
        with socket.create_connection(("127.0.0.1", port)) as two:
            two.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
            assert answer(two, 0.5).count(b"HTTP/1.1 200") == 2
        rss = psutil.Process().memory_info().rss
        start = time.perf_counter()
        for head in (b"GET /" + b"a" * 5000, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "):
            with socket.create_connection(("127.0.0.1", port)) as big:
                sent = 0
                try:  # 64 MB of header (before: uvicorn's httptools protocol buffered all of it and said 200)
                    big.sendall(head)
                    for _ in range(1024):
                        big.sendall(b"b" * 65536)
                        sent += 65536
                except OSError:  # the server closed the connection: the rest was never read
                    pass
                reply = answer(big, 2)
            assert reply.startswith(b"HTTP/1.1 431") and b"4096 bytes" in reply, reply[:200]
            assert sent < 32 * 1024 * 1024
        assert time.perf_counter() - start < 5
        assert psutil.Process().memory_info().rss - rss < 50 * 1024 * 1024


def test_one_client_cannot_take_every_connection():
    with real_server(max_connections_per_client=3) as port:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        with socket.create_connection(("127.0.0.1", port)) as extra:
            reply = answer(extra, 2)
        assert reply.startswith(b"HTTP/1.1 503") and b"too many connections" in reply
        held.pop().close()
        deadline, reply = time.time() + 5, b""
        while not reply.startswith(b"HTTP/1.1 200") and time.time() < deadline:  # a slot freed is a slot again
            time.sleep(0.05)  # once the server has seen the close
            with socket.create_connection(("127.0.0.1", port)) as again:
                again.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                reply = answer(again, 2)
        assert reply.startswith(b"HTTP/1.1 200"), reply
        for s in held:
            s.close()


def test_a_body_trickled_in_gets_408_within_the_whole_body_deadline(monkeypatch):
    import nnlab.serve.app as app_mod

    monkeypatch.setattr(app_mod, "BODY_TIMEOUT_S", 0.6)

    async def echo(scope, receive, send):
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    with real_server(app_mod.BodyLimit(echo)) as port, socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n")
        start = time.perf_counter()
        slow.settimeout(0.1)
        reply = b""
        for _ in range(50):  # a byte every 0.1 s: each part well within 0.6 s, the whole body not
            try:
                slow.sendall(b"x")
                reply += slow.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if reply:
                break
        reply += answer(slow, 1)
    assert reply.startswith(b"HTTP/1.1 408"), reply  # before: never answered (the deadline was per part)
    assert time.perf_counter() - start < 3


def test_two_host_headers_are_400():
    from nnlab.serve.hardening import HostCheck

    with real_server(HostCheck(_ok_app, ["demo.example"])) as port:
        for head, status in ((b"Host: demo.example", b"200"), (b"Host: demo.example:8000", b"200"),
                             (b"Host: evil.example", b"400"),
                             (b"Host: demo.example\r\nHost: evil.example", b"400"),
                             (b"Host: evil.example\r\nHost: demo.example", b"400")):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"GET / HTTP/1.1\r\n" + head + b"\r\nConnection: close\r\n\r\n")
                assert answer(s, 2).startswith(b"HTTP/1.1 " + status), head


# --------------------------------------------------------------------------- image uploads


def _encoded(image: np.ndarray, fmt: str = "PNG") -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def test_large_images_are_decoded_reduced_and_ordinary_ones_exactly(shared_data):
    from nnlab.inference.models.image import decode_image
    from nnlab.ingest.image_files import read_image

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    reduced = decode_image(_encoded(image), reduce_to=10)  # both sides >= 20: shrunk by 4, sides still >= 10
    boxes = image.reshape(10, 4, 15, 4, 3).astype(np.float64).mean(axis=(1, 3))
    assert reduced.shape == (10, 15, 3)
    assert np.abs(reduced - boxes).max() <= 1  # the mean of each 4 x 4 box of pixels
    photo = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    jpeg = _encoded(photo, "JPEG")
    drafted = decode_image(jpeg, reduce_to=100)  # decoded at 1/4 scale: 1/8 would make a side < 100
    assert drafted.shape == (150, 200, 3)
    full = decode_image(jpeg).reshape(150, 4, 200, 4, 3).mean(axis=(1, 3))
    assert np.abs(drafted - full).mean() < 8
    face = sorted((shared_data / "faces" / "orl").glob("s1/*.pgm"))[0]  # an ordinary image: read exactly
    assert np.array_equal(decode_image(face.read_bytes(), reduce_to=1024), read_image(face))


def _request(body: bytes, kind: str = "image/png"):
    from starlette.requests import Request

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    return Request({"type": "http", "method": "POST", "headers": [(b"content-type", kind.encode())]}, receive)


def test_uploads_beyond_the_slots_are_503_with_retry_after():
    from nnlab.serve.uploads import LIGHT_PIXELS, Refused, Uploads

    small = _encoded(np.zeros((20, 20), dtype=np.uint8))
    side = int(LIGHT_PIXELS ** 0.5) + 10
    large = _encoded(np.zeros((side, side), dtype=np.uint8))

    async def scenario(uploads: Uploads, first: bytes, second: bytes):
        async with uploads.image(_request(first)) as image:
            assert image.ndim == 2
            try:
                async with uploads.image(_request(second)):
                    return "admitted"
            except Refused as refused:
                response = refused.response()
                return response.status_code, response.headers.get("retry-after"), refused.detail

    status, retry, detail = asyncio.run(scenario(Uploads(28, max_concurrent=1), small, small))
    assert (status, retry) == (503, "1") and "busy" in detail
    assert asyncio.run(scenario(Uploads(28, max_concurrent=4, max_heavy=1), large, small)) == "admitted"
    assert asyncio.run(scenario(Uploads(28, max_concurrent=4, max_heavy=1), large, large))[0] == 503
    uploads = Uploads(28, max_concurrent=1)
    asyncio.run(scenario(uploads, small, small))
    assert uploads.running == uploads.heavy == 0  # slots given back, refusals included


def test_concurrent_uploads_of_the_largest_image_keep_memory_bounded():
    import psutil
    from fastapi.testclient import TestClient
    from image_models import digits_export

    from nnlab.serve.uploads import MAX_UPLOAD_PIXELS

    side = int(MAX_UPLOAD_PIXELS ** 0.5)  # the largest image allowed: 4,000 x 4,000 RGBA, 62 KB of PNG
    worst = _encoded(np.zeros((side, side, 4), dtype=np.uint8))
    over = _encoded(np.zeros((side + 1, side, 4), dtype=np.uint8))
    client = TestClient(create_app(digits_export(), max_concurrent=4))
    assert client.post("/api/predict", content=over, headers={"content-type": "image/png"}).status_code == 413
    proc = psutil.Process()
    base, peak, statuses = proc.memory_info().rss, [0], []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    def upload() -> None:
        r = client.post("/api/predict", content=worst, headers={"content-type": "image/png"})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=sample)] + [threading.Thread(target=upload) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    done.set()
    threads[0].join()
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    # before: each upload decoded at full size and converted to float (about 0.5 GB each)
    assert peak[0] - base < 400 * 1024 * 1024, (peak[0] - base) / 2**20


def test_serve_options_reach_the_app_and_the_protocol(monkeypatch, cli):
    import nnlab.serve.app as app_mod
    from nnlab.serve.hardening import GuardedProtocol

    seen: dict = {}
    monkeypatch.setattr(app_mod, "check_port_free", lambda host, port: None)
    monkeypatch.setattr(app_mod, "create_app", lambda path, **kw: seen.update(kw) or "app")
    monkeypatch.setattr(app_mod.uvicorn, "run", lambda app, **kw: seen.update(uvicorn=kw))
    result = cli("serve", "somewhere", "--max-concurrent", "3", "--max-connections-per-client", "5")
    assert seen["max_concurrent"] == 3
    assert seen["uvicorn"]["host"] == "127.0.0.1" and seen["uvicorn"]["port"] == 8000  # loopback unless asked
    assert "at http://127.0.0.1:8000/" in result.stdout
    protocol = seen["uvicorn"]["http"]
    assert issubclass(protocol, GuardedProtocol) and protocol.max_connections_per_client == 5
    assert GuardedProtocol.max_connections_per_client == 64  # the class itself stays as it is


def test_serve_workers_share_the_limits_and_hand_over_to_a_supervisor(monkeypatch, cli, tmp_path):
    import nnlab.serve.app as app_mod

    seen: dict = {}
    monkeypatch.setattr(app_mod, "check_port_free", lambda host, port: None)
    monkeypatch.setattr(app_mod, "create_app", lambda path, **kw: seen.update(app=kw) or "app")
    monkeypatch.setattr(app_mod.uvicorn, "run", lambda *a, **kw: pytest.fail("one worker's path with --workers 2"))
    monkeypatch.setattr(app_mod, "supervise", lambda app, server: seen.update(worker=app, server=server))
    cli("serve", str(tmp_path), "--workers", "2", "--max-concurrent", "3", "--max-connections-per-client", "5",
        "--port", "8123")
    assert seen["app"]["max_concurrent"] == 2  # checked with a worker's share, as the workers will load it
    assert seen["worker"]["max_concurrent"] == 2 and seen["worker"]["max_connections_per_client"] == 3
    assert seen["worker"]["path"] == str(tmp_path.resolve())
    assert seen["server"] == {"host": "127.0.0.1", "port": 8123, "access_log": True, "log_level": "info", "workers": 2}


def test_a_worker_builds_its_app_from_the_supervisors_environment(monkeypatch):
    import nnlab.serve.app as app_mod
    from nnlab.serve.hardening import GuardedProtocol
    from nnlab.serve.workers import OPTIONS_ENV

    monkeypatch.setattr(GuardedProtocol, "max_connections_per_client", GuardedProtocol.max_connections_per_client)
    monkeypatch.setenv(OPTIONS_ENV, json.dumps({"path": str(tiny_export()), "threads": 1, "gallery": None,
                                                "docs": False, "allowed_hosts": ["demo.test"], "max_concurrent": 2,
                                                "max_connections_per_client": 7}))
    app = app_mod.worker_app()
    assert GuardedProtocol.max_connections_per_client == 7
    with TestClient(app, base_url="http://demo.test") as client:
        r = client.post("/api/predict", json={"drawing": [[[0, 100, 200], [0, 50, 255]]], "top_k": 2})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 2
    with TestClient(app, base_url="http://elsewhere.test") as client:  # the allowed hosts reached the worker
        assert client.get("/api/health").status_code == 400
