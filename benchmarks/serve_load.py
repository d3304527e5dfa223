"""Load test of the doodle demo's API: 16 concurrent clients posting real drawings.

The server is `nnlab serve EXPORT_DIR --workers N` (onnxruntime; one worker process per core unless
--workers says otherwise) in a subprocess on a free loopback port.
The clients (threads, one keep-alive connection each, in this process: `Client`, which sends prepared
requests and reads answers by Content-Length, so that the load generator takes little of the cores) post
real shared Quick, Draw! drawings to /api/predict for --seconds (20 by default) after a short warm-up;
mostly Google's simplified drawings, and a quarter raw ones (float screen coordinates with t,
simplified by the server, as the page sends them), each within the API's limits.

Reference, measured in the same run: the same requests handled in this process without HTTP
(JSON parse, simplification of raw drawings, rendering, onnxruntime, top-3), one after another,
which gives the work per request and what the cores could serve at best; the same work in batches
of 16, as the server's micro-batches run it under load; and the HTTP floor: the same clients against
uvicorn with nnlab's protocol class and limits and an app that answers a fixed prediction (in a
subprocess). The clients share the machine's cores with the server, so the bound printed is
cores / (batched work + the floor's server CPU + the clients' CPU) per request: what the machine
could serve to these clients if nnlab added nothing (RESULT serve_floor_rps, serve_bound_rps).

Without --export or --run it trains a demo-sized model first (about a minute): the
architecture, input size and encoding of recipes/doodles-demo.toml when that file exists,
else MobileNetV3-small at 64 px with time-decay strokes, on synthetic doodles for a few steps
(latency depends on the architecture and input, not on the weights).

Latency includes queueing behind the other clients, and on a shared machine the other
programs' load: the load average is printed with the figures.

Then the hostile mix (--hostile-share, a quarter of the clients by default): those clients post
the worst-case valid drawing back to back (10,000 raw points of a zigzag with fractional x, about
145 KB, which Google's 1 px resampling turns into millions of points), the others the same real
drawings, while one more client asks /api/health every 50 ms. RESULT lines: p99 of the normal
requests and of /api/health under that mix, and the 5xx answers to normal requests (a hostile
request may get 503 when too many of its kind are queued: counted apart).

With --int8 it compares instead the float export with the INT8 one (`nnlab export --quantize int8`)
of the same run, served in turn (alternating, two rounds each) under the normal mix: requests/s,
p50 and p99 side by side, the validation metric of both models and the drop, and
`RESULT serve_int8_speedup` (INT8 requests/s over float). Pass a trained --run for a meaningful drop.

Then the attacks (`serve_attacks.py`): --slowloris sockets (300) trickling heads and bodies from
another loopback address while /api/health is probed; 8 connections sending 64 MB of headers each;
and the image mix: an image classifier's server, --image-bombs clients (16) uploading the largest
image allowed while 4 clients upload real digits and /api/health is probed, the server's RSS sampled.
RESULT lines: serve_slowloris_health_p99_ms, serve_huge_head_431, serve_huge_head_rss_mb,
serve_image_rss_gb, serve_image_p99_ms, serve_health_p99_ms_under_images, serve_image_5xx, ...

Run: .venv/bin/python benchmarks/serve_load.py [--export DIR | --run DIR] [--seconds 20] [--quick] [--int8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

import serve_attacks  # the phases with image uploads, slowloris sockets and huge heads
from nnlab.serve.app import MAX_BODY_BYTES, MAX_POINTS, MAX_STROKES

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NNLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
DEMO_RECIPE = ROOT / "recipes" / "doodles-demo.toml"


def demo_model(workdir: Path) -> Path:
    """Train a demo-sized model for a few steps on synthetic doodles; returns the run dir."""
    from nnlab.config import load_config, validate
    from nnlab.training import fit

    data = {"kind": "synth", "per_class": 60, "image_size": 64, "encoding": "time-decay", "batch_size": 64,
            "val_fraction": 0.2, "test_fraction": 0.0}
    model = {"name": "timm:mobilenetv3_small_100"}
    source = "MobileNetV3-small, 64 px, time-decay (default)"
    if DEMO_RECIPE.is_file():
        recipe = load_config(DEMO_RECIPE)
        d = recipe.data
        data |= {"image_size": d.image_size, "encoding": d.encoding, "padding": d.padding, "channels": d.channels}
        if d.line_width is not None:
            data["line_width"] = d.line_width
        model = recipe.model.model_dump(mode="json", exclude_none=True) | {"pretrained": False}
        model.pop("weights", None)
        source = f"{DEMO_RECIPE.name}: {recipe.model.name}, {d.image_size} px, {d.encoding}"
    print(f"training a demo-sized model ({source}) on synthetic doodles for a few steps...", flush=True)
    cfg = validate({"name": "serve-load", "data": data, "model": model,
                    "train": {"epochs": 1, "steps_per_epoch": 2, "threads": 2}})
    return fit(cfg, out=workdir / "run").path


def load_bodies(limit: int, raw_share: float, seed: int = 0) -> list[bytes]:
    """JSON bodies of real drawings: simplified ones and a share of raw ones, within the limits."""
    simplified, raw = [], []
    for path in sorted((DATA / "quickdraw" / "simplified").glob("*.ndjson")):
        with open(path) as f:
            simplified.extend(json.loads(line)["drawing"] for line in f)
    for path in sorted((DATA / "quickdraw" / "raw").glob("*.ndjson")):
        with open(path) as f:
            raw.extend(json.loads(line)["drawing"] for line in f)
    rng = np.random.default_rng(seed)
    n_raw = int(limit * raw_share)
    bodies = []
    for pool, n in ((raw, n_raw), (simplified, limit - n_raw)):
        taken = 0
        for i in rng.permutation(len(pool)):
            drawing = pool[i]
            body = json.dumps({"drawing": drawing, "top_k": 3}, separators=(",", ":")).encode()
            if (len(drawing) <= MAX_STROKES and sum(len(s[0]) for s in drawing) <= MAX_POINTS
                    and len(body) <= MAX_BODY_BYTES):
                bodies.append(body)
                taken += 1
                if taken == n:
                    break
    rng.shuffle(bodies)
    return bodies


def reference(export_dir: Path, bodies: list[bytes], seconds: float, batch: int = 1) -> float:
    """CPU milliseconds of work per request without HTTP (one thread, requests one after another, or
    `batch` at a time in one model call as the server's micro-batches under load; CPU time, so that
    other programs on a shared machine do not count)."""
    from nnlab.inference.models.doodle import google_to_arrays, load_doodle_model, prepare_strokes

    model = load_doodle_model(export_dir, threads=1)

    def handle(chunk: list[bytes]) -> None:
        drawings = [prepare_strokes(google_to_arrays(json.loads(body)["drawing"])) for body in chunk]
        for probs in model.probabilities(drawings):
            model.top_k(probs, 3)

    for k in range(20):  # warm-up (JIT, allocations)
        handle(bodies[k * batch:(k + 1) * batch] or bodies[:batch])
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        first = n % len(bodies)
        handle(bodies[first:first + batch])
        n += len(bodies[first:first + batch])
    return (time.process_time() - cpu) / n * 1000


FLOOR_BATCH = 16  # one request per client: the largest micro-batch the load mix can form
FLOOR_ANSWER = json.dumps({"predictions": [{"word": w, "probability": p} for w, p in
                                           (("cat", 0.5), ("dog", 0.25), ("bee", 0.125))]}).encode()


async def floor_app(scope, receive, send) -> None:  # noqa: ANN001 - ASGI's callables
    """The HTTP floor's app: reads the whole body and answers a fixed prediction, no work between."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(FLOOR_ANSWER))]})
    await send({"type": "http.response.body", "body": FLOOR_ANSWER})


def serve_floor(port: int) -> None:
    """`floor_app` under uvicorn as `nnlab serve` runs it: the same protocol class and limits."""
    import uvicorn

    from nnlab.serve.app import UVICORN_LIMITS, GuardedProtocol

    uvicorn.run(floor_app, host="127.0.0.1", port=port, access_log=False, log_level="warning",
                **{**UVICORN_LIMITS, "http": GuardedProtocol})


def http_floor(bodies: list[bytes], clients: int, seconds: float, warmup: float) -> tuple[float, float, float, float]:
    """The same clients against `floor_app` (in a subprocess): requests/s, p99 ms, and the server's and the
    clients' CPU ms per request. What HTTP itself costs on this machine, before any work of nnlab's."""
    port = free_port()
    server = start_server([sys.executable, __file__, "--floor-server", str(port)], port)
    try:
        cpu_before, own_before = cpu_seconds(server.pid), time.process_time()
        latencies, errors, elapsed = drive(port, bodies, clients, seconds, warmup)
        cpu_after, own_after = cpu_seconds(server.pid), time.process_time()
    finally:
        stop_server(server)
    if errors:
        raise SystemExit(f"the HTTP floor's server failed: {errors[0]}")
    n = len(latencies)
    server_ms = (cpu_after - cpu_before) / n * 1000 if cpu_before is not None and cpu_after is not None else float("nan")
    return n / elapsed, float(np.percentile(np.array(latencies) * 1000, 99)), server_ms, (own_after - own_before) / n * 1000


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and its children (the server's workers), or None when unknown."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])
    except psutil.Error:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(export_dir: Path, port: int, threads: int, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "nnlab", "serve", str(export_dir), "--port", str(port), "--host", "127.0.0.1",
            "--no-access-log", "--threads", str(threads), "--workers", str(workers)]


def start_server(cmd: list[str], port: int) -> subprocess.Popen:
    """The server command in a subprocess, once /api/health answers 200 on the port."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}):\n{proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the server did not come up within 120 s")


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()


def worst_case_body() -> bytes:
    """The worst-case valid request: MAX_POINTS raw points of a zigzag with fractional x."""
    n = MAX_POINTS
    drawing = [[[round(0.1 * i + 0.05, 2) for i in range(n)], [0.0 if i % 2 == 0 else 1000.0 for i in range(n)]]]
    body = json.dumps({"drawing": drawing, "top_k": 3}, separators=(",", ":")).encode()
    assert len(body) <= MAX_BODY_BYTES
    return body


def probe_health(port: int, t_measure: float, t_end: float, out: list[float]) -> None:
    """GET /api/health every 50 ms on its own connection; latencies (s) after the warm-up."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while (t0 := time.perf_counter()) < t_end:
        try:
            conn.request("GET", "/api/health")
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        if t0 >= t_measure:
            out.append(time.perf_counter() - t0)
        time.sleep(max(0.0, 0.05 - (time.perf_counter() - t0)))
    conn.close()


class Client:
    """One keep-alive HTTP/1.1 connection posting prepared requests: the load generator's client.

    It shares the machine's cores with the server, so it does only what a client must: send the bytes, read
    the head up to Content-Length and the body (http.client also parses every header into an email message,
    about 0.35 ms of CPU per request here against 0.1 ms). Any other answer (no Content-Length, a closed
    connection) is an error, and the next request opens a new connection."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port, self.timeout = port, timeout
        self.sock: socket.socket | None = None
        self.pending = b""  # bytes read past the last answer

    def post(self, request: bytes) -> tuple[int, bytes]:
        """(status, body) of one prepared request (`request_bytes`)."""
        try:
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.pending = b""
            self.sock.sendall(request)
            buf = self.pending
            while (end := buf.find(b"\r\n\r\n")) < 0:
                buf += self._recv()
            head = buf[:end].decode("latin-1").split("\r\n")
            length = next((int(v) for k, _, v in (h.partition(":") for h in head[1:])
                           if k.strip().lower() == "content-length"), None)
            if length is None:
                raise ValueError(f"an answer without Content-Length: {head[0]!r}")
            while len(buf) < end + 4 + length:
                buf += self._recv()
            self.pending = buf[end + 4 + length:]
            return int(head[0].split(" ", 2)[1]), buf[end + 4:end + 4 + length]
        except (OSError, ValueError, IndexError):
            self.close()
            raise

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def request_bytes(port: int, body: bytes) -> bytes:
    """A POST /api/predict of `body`, ready to send."""
    return (b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (port, len(body))) + body


def drive(port: int, bodies: list[bytes], clients: int, seconds: float, warmup: float,
          hostile: bytes | None = None, hostile_clients: int = 0, health: list[float] | None = None):
    """`clients` threads, each with its own keep-alive connection (`Client`), posting back to back;
    latencies (s) and errors of the requests started after the warm-up. With `hostile`, the first
    `hostile_clients` post that body instead (their answers are not measured: only 5xx other than
    503 count as errors) and `health` collects /api/health latencies."""
    latencies: list[float] = []
    errors: list[str] = []
    t_start = time.perf_counter()
    t_measure, t_end = t_start + warmup, t_start + warmup + seconds
    requests = [request_bytes(port, body) for body in bodies]
    hostile_request = request_bytes(port, hostile) if hostile is not None else None

    def worker(k: int) -> None:
        client = Client(port)
        i = k
        bad = k < hostile_clients
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                break
            request = hostile_request if bad else requests[i % len(requests)]
            i += clients
            try:
                status, data = client.post(request)
                if bad:
                    if status >= 500 and status != 503:
                        errors.append(f"hostile: HTTP {status}: {data[:200]!r}")
                    continue
                ok = status == 200 and len(json.loads(data)["predictions"]) == 3
                problem = None if ok else f"HTTP {status}: {data[:200]!r}"
            except (OSError, ValueError, KeyError, IndexError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            t1 = time.perf_counter()
            if t0 >= t_measure:  # list.append is atomic: no lock needed
                latencies.append(t1 - t0)
                if problem:
                    errors.append(problem)
        client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    if health is not None:
        threads.append(threading.Thread(target=probe_health, args=(port, t_measure, t_end, health)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - t_measure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, help="an `nnlab export` directory to serve")
    ap.add_argument("--run", type=Path, help="a run directory (exported first)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured duration (bounded to 60)")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="server inference threads per model call")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else os.cpu_count(), help="server processes (nnlab serve --workers; default: one per core)")
    ap.add_argument("--drawings", type=int, default=2000)
    ap.add_argument("--hostile-share", type=float, default=0.25,
                    help="share of the clients sending the worst-case drawing in the second phase (0: none)")
    ap.add_argument("--int8", action="store_true", help="compare the float and the INT8 export instead")
    ap.add_argument("--int8-max-drop", type=float, default=1.0,
                    help="--max-drop of the INT8 export (default 1: always measure; the drop is printed)")
    ap.add_argument("--slowloris", type=int, default=300, help="slowloris sockets in the attack phase (0: none)")
    ap.add_argument("--image-bombs", type=int, default=16,
                    help="clients uploading the worst image in the image mix (0: no image mix)")
    ap.add_argument("--image-export", type=Path, help="an image classifier's export for the image mix "
                                                      "(default: LeNet on digits, trained for a few steps)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: every phase for about 3 s")
    ap.add_argument("--floor-server", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the HTTP floor's process
    args = ap.parse_args()
    if args.floor_server:
        return serve_floor(args.floor_server)
    if args.quick:
        args.seconds, args.warmup, args.drawings = min(args.seconds, 3.0), min(args.warmup, 0.5), 300
    seconds = min(max(args.seconds, 1.0), 60.0)
    os.environ.setdefault("NNLAB_PROGRESS", "0")
    if not (DATA / "quickdraw" / "simplified").is_dir():
        raise SystemExit(f"{DATA}/quickdraw not found: the benchmark posts real shared drawings")
    if args.int8:
        return compare_int8(args, seconds)

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        export_dir = args.export
        if export_dir is None:
            from nnlab.inference.models.export import export_onnx

            run_dir = args.run or demo_model(Path(tmp))
            export_dir = export_onnx(run_dir, Path(tmp) / "export").out_dir
        info = json.loads((export_dir / "preprocessing.json").read_text())
        bodies = load_bodies(args.drawings, raw_share=0.25)
        sizes = np.array([len(b) for b in bodies])
        print(f"model: {info['model']}, {info['num_classes']} classes, input {info['input']['shape'][1:]}, "
              f"{info['drawing']['encoding']} (onnxruntime)")
        print(f"requests: {len(bodies)} real drawings (a quarter raw), body {sizes.mean() / 1024:.1f} KB mean, "
              f"{sizes.max() / 1024:.1f} KB max")

        ref_ms = reference(export_dir, bodies, seconds=1.0 if args.quick else 3.0)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(f"reference (in process, no HTTP, one thread): {ref_ms:.2f} ms of CPU per request "
              f"-> at best {1000 / ref_ms * cores:.0f} requests/s on {cores} cores")
        batched_ms = reference(export_dir, bodies, seconds=1.0 if args.quick else 3.0, batch=FLOOR_BATCH)
        floor = http_floor(bodies, args.clients, seconds / 2, args.warmup)
        print(f"the same work in batches of {FLOOR_BATCH} (the server's micro-batches under load): "
              f"{batched_ms:.2f} ms of CPU per request")
        print(f"HTTP floor (uvicorn with nnlab's protocol and limits, an app answering a fixed prediction, the same "
              f"{args.clients} clients): {floor[0]:.0f} requests/s, p99 {floor[1]:.1f} ms; CPU per request: "
              f"server {floor[2]:.2f} ms, clients {floor[3]:.2f} ms")
        bound = 1000 * cores / (batched_ms + floor[2] + floor[3])
        print(f"bound: {cores} cores / (batched work {batched_ms:.2f} + HTTP floor {floor[2]:.2f} + clients "
              f"{floor[3]:.2f} ms) = {bound:.0f} requests/s, what this machine could serve to these clients if "
              f"nnlab added nothing to the model's work and HTTP")

        port = free_port()
        server = start_server(serve_command(export_dir, port, args.threads, args.workers), port)
        try:
            load_before = os.getloadavg()
            cpu_before, own_before = cpu_seconds(server.pid), time.process_time()
            latencies, errors, elapsed = drive(port, bodies, args.clients, seconds, args.warmup)
            cpu_after, own_after = cpu_seconds(server.pid), time.process_time()
            load_after = os.getloadavg()
            hostile = None
            if args.hostile_share > 0:
                n_bad = max(1, round(args.clients * args.hostile_share))
                health: list[float] = []
                h_lat, h_err, h_elapsed = drive(port, bodies, args.clients, seconds, args.warmup,
                                                hostile=worst_case_body(), hostile_clients=n_bad, health=health)
                hostile = (n_bad, h_lat, h_err, h_elapsed, health)
            loris = serve_attacks.slowloris(port, args.slowloris, seconds, args.warmup) if args.slowloris else None
            heads = serve_attacks.huge_heads(port, server.pid, megabytes=16 if args.quick else 64)
        finally:
            stop_server(server)

    lat = np.array(latencies) * 1000
    p50, p90, p99 = np.percentile(lat, [50, 90, 99]) if len(lat) else (float("nan"),) * 3
    rps = len(lat) / elapsed
    print(f"load: {args.clients} clients for {elapsed:.1f} s (after {args.warmup:.0f} s warm-up), "
          f"server: {args.workers} worker process(es), inference threads per model call: {args.threads}")
    print(f"requests/s {rps:.1f}   p50 {p50:.1f} ms   p90 {p90:.1f} ms   p99 {p99:.1f} ms   "
          f"max {lat.max():.1f} ms   errors {len(errors)} of {len(lat)}")
    print(f"vs reference: {rps * ref_ms / 1000 / cores:.0%} of the cores' best throughput; "
          f"p50 is {p50 / ref_ms:.1f}x one request's work")
    if cpu_before is not None and cpu_after is not None and len(lat):
        # warm-up requests are counted in the CPU time too: an upper bound
        server_ms = (cpu_after - cpu_before) / len(lat) * 1000
        print(f"server CPU per request: {server_ms:.2f} ms (batched work {batched_ms:.2f}, HTTP floor {floor[2]:.2f}; "
              f"the other {server_ms - batched_ms - floor[2]:.2f} ms: nnlab's parsing, checks, thread hand-offs and JSON, "
              f"and HTTP of real bodies beyond the floor's); "
              f"the clients' CPU per request: {(own_after - own_before) / len(lat) * 1000:.2f} ms")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} cores")
    for e in sorted(set(errors))[:5]:
        print(f"error: {e}")
    print(f"RESULT serve_floor_rps {floor[0]:.1f}")
    print(f"RESULT serve_reference_batched_ms {batched_ms:.3f}")
    print(f"RESULT serve_bound_rps {bound:.1f}")
    print(f"RESULT serve_rps {rps:.1f}")
    print(f"RESULT serve_p50_ms {p50:.2f}")
    print(f"RESULT serve_p99_ms {p99:.2f}")
    print(f"RESULT serve_errors {len(errors)}")
    if hostile is not None:
        report_hostile(*hostile, clients=args.clients)
    images = image_mix(args, seconds) if args.image_bombs else None
    serve_attacks.report(images, loris, heads)


def image_mix(args: argparse.Namespace, seconds: float) -> dict:
    """The image mix (serve_attacks.image_mix) against an image classifier's server."""
    with tempfile.TemporaryDirectory(prefix="serve-images-") as tmp:
        export_dir = args.image_export or serve_attacks.image_model(Path(tmp))
        port = free_port()
        server = start_server(serve_command(export_dir, port, args.threads, args.workers), port)
        try:
            return serve_attacks.image_mix(port, server.pid, serve_attacks.digit_images(DATA),
                                           serve_attacks.worst_image(), args.image_bombs, seconds, args.warmup)
        finally:
            stop_server(server)


def report_hostile(n_bad: int, lat_s: list[float], errors: list[str], elapsed: float, health_s: list[float],
                   clients: int) -> None:
    """The hostile mix's figures and RESULT lines."""
    lat, health = np.array(lat_s) * 1000, np.array(health_s) * 1000
    p99 = float(np.percentile(lat, 99)) if len(lat) else float("nan")
    h99 = float(np.percentile(health, 99)) if len(health) else float("nan")
    five = sum(1 for e in errors if e.startswith("HTTP 5") or e.startswith("hostile: HTTP 5"))
    print(f"hostile mix: {n_bad} of {clients} clients post the worst-case drawing for {elapsed:.1f} s; "
          f"normal requests/s {len(lat) / elapsed:.1f}   p50 {np.percentile(lat, 50) if len(lat) else float('nan'):.1f}"
          f" ms   p99 {p99:.1f} ms   errors {len(errors)}; /api/health p99 {h99:.1f} ms, "
          f"max {health.max() if len(health) else float('nan'):.1f} ms over {len(health)} probes")
    for e in sorted(set(errors))[:5]:
        print(f"error: {e}")
    print(f"RESULT serve_hostile_normal_p99_ms {p99:.2f}")
    print(f"RESULT serve_hostile_health_p99_ms {h99:.2f}")
    print(f"RESULT serve_hostile_5xx {five}")


def compare_int8(args: argparse.Namespace, seconds: float) -> None:
    """The float and INT8 exports of one run, each served in turn under the normal mix (alternating,
    two rounds of seconds / 2 each), figures side by side and RESULT serve_int8_speedup."""
    from nnlab.inference.models.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="serve-int8-") as tmp:
        run_dir = args.run
        if run_dir is None and args.export is not None:  # an export names its run
            run_dir = Path(json.loads((args.export / "preprocessing.json").read_text())["run"])
        run_dir = run_dir or demo_model(Path(tmp))
        exports = {"float": export_onnx(run_dir, Path(tmp) / "float").out_dir}
        result = export_onnx(run_dir, Path(tmp) / "int8", quantize="int8", max_drop=args.int8_max_drop)
        exports["int8"], q = result.out_dir, result.quantization
        bodies = load_bodies(args.drawings, raw_share=0.25)
        print(f"INT8 ({q.method}): validation {q.metric} {q.int8_score:.4f} vs float {q.float_score:.4f} "
              f"(drop {q.drop:+.4f}) on {q.examples} examples; model {q.float_bytes / 1e6:.2f} MB -> "
              f"{q.int8_bytes / 1e6:.2f} MB")
        figures = {name: {"lat": [], "elapsed": 0.0, "errors": 0} for name in exports}
        for _round in range(2):
            for name, folder in exports.items():
                port = free_port()
                server = start_server(serve_command(folder, port, args.threads, args.workers), port)
                try:
                    lat, errors, elapsed = drive(port, bodies, args.clients, seconds / 2, args.warmup)
                finally:
                    server.terminate()
                    server.wait(timeout=15)
                figures[name]["lat"] += lat
                figures[name]["elapsed"] += elapsed
                figures[name]["errors"] += len(errors)
    rows = {}
    for name, f in figures.items():
        lat = np.array(f["lat"]) * 1000
        p50, p99 = np.percentile(lat, [50, 99]) if len(lat) else (float("nan"),) * 2
        rows[name] = (len(lat) / f["elapsed"], p50, p99, f["errors"])
    print(f"{args.clients} clients, 2 rounds of {seconds / 2:.1f} s per model, alternating; "
          f"load average (1 min) {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'model':<6} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, (rps, p50, p99, err) in rows.items():
        print(f"{name:<6} {rps:>11.1f} {p50:>8.1f} {p99:>8.1f} {err:>7}")
    print(f"RESULT serve_int8_speedup {rows['int8'][0] / rows['float'][0]:.3f}")
    print(f"RESULT serve_int8_p50_ms {rows['int8'][1]:.2f}")
    print(f"RESULT serve_int8_p99_ms {rows['int8'][2]:.2f}")
    print(f"RESULT serve_float_p50_ms {rows['float'][1]:.2f}")
    print(f"RESULT serve_float_p99_ms {rows['float'][2]:.2f}")
    print(f"RESULT serve_int8_{q.metric}_drop {q.drop:.4f}")


if __name__ == "__main__":
    main()
