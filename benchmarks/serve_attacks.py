"""The hostile phases of `serve_load.py` that are not drawings: image uploads of the largest image
allowed, slowloris heads and bodies, huge request heads.

- image mix: an image classifier (LeNet on digits, exported; or --image-export) served by `nnlab serve`;
  `bombs` clients upload the worst image under the cap back to back (4,000 x 4,000 RGBA PNG, 62 KB,
  decoded at 64 MB), 4 clients upload real 28 x 28 digits (their latency is measured) and a probe asks
  /api/health every 50 ms; the server's RSS (process tree) is sampled every 50 ms.
- slowloris: `sockets` connections from another loopback address (127.0.0.2, one attacker) send their
  request heads a byte at a time, and a tenth of them a body a byte at a time, reconnecting when
  closed; /api/health is probed every 50 ms from 127.0.0.1 meanwhile.
- huge heads: 8 connections each try to send 64 MB of headers (16 with --quick); the answer (431) and its time, and the
  server's RSS before and after.
"""

from __future__ import annotations

import http.client
import io
import socket
import threading
import time
from pathlib import Path

import numpy as np

HEALTH_EVERY_S = 0.05


def tree_rss(pid: int) -> int:
    """Resident memory of a process and its children, in bytes (0 when gone)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
    except psutil.Error:
        return 0


def image_model(workdir: Path) -> Path:
    """recipes/digits-lenet.toml for one short epoch, exported: an image classifier to serve."""
    from nnlab.config import load_config
    from nnlab.inference.models.export import export_onnx
    from nnlab.training import fit

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "recipes" / "digits-lenet.toml", ["train.epochs=1", "train.steps_per_epoch=5"])
    return export_onnx(fit(cfg, out=workdir / "digits").path, workdir / "digits-export").out_dir


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def worst_image() -> bytes:
    """The largest image the server decodes: MAX_UPLOAD_PIXELS of RGBA as a PNG (compresses to 62 KB)."""
    from nnlab.serve.uploads import MAX_UPLOAD_PIXELS

    side = int(MAX_UPLOAD_PIXELS ** 0.5)
    return png(np.zeros((side, side, 4), dtype=np.uint8))


def digit_images(data: Path, n: int = 200) -> list[bytes]:
    images = np.load(data / "digits" / "mnist-mini1000" / "mini-mnist-1000.npz")["images"][:n]
    return [png(im) for im in images]


def probe_health(port: int, t_measure: float, t_end: float, out: list[float], errors: list[str]) -> None:
    """GET /api/health every 50 ms on one keep-alive connection from 127.0.0.1; latencies (s) after
    t_measure; a failure or a non-200 answer counts as an error (and its time as a latency)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while (t0 := time.perf_counter()) < t_end:
        problem = None
        try:
            conn.request("GET", "/api/health")
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                problem = f"health: HTTP {r.status}"
        except (OSError, http.client.HTTPException) as exc:
            problem = f"health: {type(exc).__name__}: {exc}"
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        if t0 >= t_measure:
            out.append(time.perf_counter() - t0)
            if problem:
                errors.append(problem)
        time.sleep(max(0.0, HEALTH_EVERY_S - (time.perf_counter() - t0)))
    conn.close()


def image_mix(port: int, pid: int, normal: list[bytes], bomb: bytes, bombs: int, seconds: float,
              warmup: float) -> dict:
    """The image mix (see the module doc): latencies, 5xx, 503s, peak RSS."""
    t_start = time.perf_counter()
    t_measure, t_end = t_start + warmup, t_start + warmup + seconds
    normal_lat: list[float] = []
    health: list[float] = []
    errors: list[str] = []
    counts = {"bomb_200": 0, "bomb_503": 0, "normal_503": 0}
    peak = [tree_rss(pid)]
    base = peak[0]

    def client(k: int, hostile: bool) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = k
        while (t0 := time.perf_counter()) < t_end:
            body = bomb if hostile else normal[i % len(normal)]
            i += 1
            try:
                conn.request("POST", "/api/predict", body, {"content-type": "image/png"})
                r = conn.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            if t0 < t_measure:
                continue
            if hostile:
                key = "bomb_200" if status == 200 else "bomb_503" if status == 503 else "bomb_other"
                counts[key] = counts.get(key, 0) + 1
            else:
                normal_lat.append(time.perf_counter() - t0)
                counts["normal_503"] += status == 503
            if status >= 500 and status != 503:
                errors.append(f"{'bomb' if hostile else 'normal'}: HTTP {status}")
            elif not hostile and status not in (200, 503):
                errors.append(f"normal: HTTP {status}")
        conn.close()

    def sample() -> None:
        while time.perf_counter() < t_end:
            peak[0] = max(peak[0], tree_rss(pid))
            time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(k, True)) for k in range(bombs)]
    threads += [threading.Thread(target=client, args=(k, False)) for k in range(4)]
    threads += [threading.Thread(target=probe_health, args=(port, t_measure, t_end, health, errors)),
                threading.Thread(target=sample)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"normal": normal_lat, "health": health, "errors": errors, "counts": counts, "rss": peak[0],
            "rss_before": base, "elapsed": time.perf_counter() - t_measure}


def _attacker_socket(port: int, source: str) -> socket.socket:
    s = socket.socket()
    try:
        s.bind((source, 0))
    except OSError:  # no second loopback address here: attack from 127.0.0.1
        pass
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    return s


def slowloris(port: int, sockets: int, seconds: float, warmup: float, source: str = "127.0.0.2") -> dict:
    """The slowloris phase (see the module doc): /api/health latencies, connections the server closed or
    refused, and the 408 answers to trickled bodies."""
    import selectors

    t_start = time.perf_counter()
    t_measure, t_end = t_start + warmup, t_start + warmup + seconds
    health: list[float] = []
    errors: list[str] = []
    probe = threading.Thread(target=probe_health, args=(port, t_measure, t_end, health, errors))
    probe.start()
    head = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000
    body_head = (b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100000\r\n\r\n")
    sel = selectors.DefaultSelector()
    state: dict[socket.socket, list] = {}  # socket -> [payload, bytes sent, bytes of its first send]
    closed = answered_408 = reopen = 0

    def open_one(k: int) -> None:
        s = _attacker_socket(port, source)
        body = k % 10 == 0  # a tenth send a whole head at once, then the body a byte at a time
        state[s] = [body_head + b"x" * 100_000, 0, len(body_head)] if body else [head, 0, 1]
        sel.register(s, selectors.EVENT_READ)

    for k in range(sockets):
        open_one(k)
    k = sockets
    while time.perf_counter() < t_end:
        for _ in range(reopen):  # the connections closed in the last second, opened again
            open_one(k)
            k += 1
        reopen = 0
        for s, st in list(state.items()):  # more bytes on every socket, every second
            n = st[2] if st[1] == 0 else 1
            try:
                st[1] += s.send(st[0][st[1]:st[1] + n])
            except OSError:  # not connected yet, or closed (seen below)
                pass
        deadline = time.perf_counter() + 1.0
        while (left := deadline - time.perf_counter()) > 0:
            for key, _ in sel.select(left):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                answered_408 += data.startswith(b"HTTP/1.1 408")
                if not data or data.startswith(b"HTTP/1.1"):  # closed, refused or answered
                    closed += 1
                    reopen += 1
                    sel.unregister(s)
                    s.close()
                    del state[s]
    for s in state:
        s.close()
    sel.close()
    probe.join()
    return {"health": health, "errors": errors, "closed": closed, "408": answered_408,
            "elapsed": time.perf_counter() - t_measure}


def huge_heads(port: int, pid: int, connections: int = 8, megabytes: int = 64) -> dict:
    """`connections` in parallel, each sending up to `megabytes` of one header: statuses, the slowest
    answer (s) and the server's RSS growth (bytes)."""
    before = tree_rss(pid)
    statuses: list[str] = []
    times: list[float] = []
    chunk = b"b" * 65536

    def one() -> None:
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            try:
                s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
                for _ in range(megabytes * 16):
                    s.sendall(chunk)
            except OSError:
                pass  # closed by the server: the rest was never read
            try:
                reply = s.recv(4096)
            except OSError:
                reply = b""
        statuses.append(reply[9:12].decode() if reply.startswith(b"HTTP/1.1 ") else "closed")
        times.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=one) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"statuses": statuses, "slowest": max(times), "rss_growth": tree_rss(pid) - before, "mb": megabytes}


def p(values_s: list[float], q: float) -> float:
    return float(np.percentile(np.array(values_s) * 1000, q)) if values_s else float("nan")


def report(images: dict | None, loris: dict | None, heads: dict | None) -> None:
    """The figures and RESULT lines of the phases run."""
    if images is not None:
        five = sum(1 for e in images["errors"] if "HTTP 5" in e)
        c = images["counts"]
        print(f"image mix for {images['elapsed']:.1f} s: worst-image uploads {c['bomb_200']} answered, "
              f"{c['bomb_503']} refused 503 (busy); normal uploads {len(images['normal'])} "
              f"(p50 {p(images['normal'], 50):.1f} ms, p99 {p(images['normal'], 99):.1f} ms, {c['normal_503']} "
              f"503); /api/health p99 {p(images['health'], 99):.1f} ms; server RSS {images['rss_before'] / 2**30:.2f}"
              f" -> peak {images['rss'] / 2**30:.2f} GB; errors {len(images['errors'])}")
        for e in sorted(set(images["errors"]))[:5]:
            print(f"error: {e}")
        print(f"RESULT serve_image_rss_gb {images['rss'] / 2**30:.3f}")
        print(f"RESULT serve_image_p99_ms {p(images['normal'], 99):.2f}")
        print(f"RESULT serve_health_p99_ms_under_images {p(images['health'], 99):.2f}")
        print(f"RESULT serve_image_5xx {five}")
    if loris is not None:
        print(f"slowloris for {loris['elapsed']:.1f} s: {loris['closed']} attacking connections closed or refused "
              f"by the server, {loris['408']} trickled bodies answered 408; /api/health p99 "
              f"{p(loris['health'], 99):.1f} ms, max {p(loris['health'], 100):.1f} ms over {len(loris['health'])} "
              f"probes, {len(loris['errors'])} failed")
        for e in sorted(set(loris["errors"]))[:5]:
            print(f"error: {e}")
        print(f"RESULT serve_slowloris_health_p99_ms {p(loris['health'], 99):.2f}")
        print(f"RESULT serve_slowloris_health_errors {len(loris['errors'])}")
        print(f"RESULT serve_slowloris_body_408 {loris['408']}")
    if heads is not None:
        statuses = sorted(set(heads["statuses"]))
        print(f"huge heads: {len(heads['statuses'])} connections sending {heads['mb']} MB of headers: {', '.join(statuses)}, "
              f"slowest answer {heads['slowest']:.2f} s, server RSS growth {heads['rss_growth'] / 2**20:.0f} MB")
        print(f"RESULT serve_huge_head_431 {heads['statuses'].count('431')}")
        print(f"RESULT serve_huge_head_rss_mb {heads['rss_growth'] / 2**20:.1f}")
