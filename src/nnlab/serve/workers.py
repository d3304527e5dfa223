"""The supervisor of `nnlab serve --workers N`: N uvicorn processes, each on its own socket, none in here.

`serve(workers=N)` checks what it is to serve by loading it once, then replaces its own process with this
module (exec: the same pid, so Ctrl+C, a service manager and a benchmark see one server). This module
imports uvicorn and the protocol class only, so the supervisor holds about 45 MB instead of the model's
imports (about 1 GB with torch).

Each worker listens on a socket of its own bound with SO_REUSEPORT, so the kernel spreads new connections
over the workers by hash. On one shared socket (uvicorn's `--workers`), the worker that wakes first
accepts every pending connection: 16 keep-alive clients arriving together all landed on one worker in
some runs of benchmarks/serve_load.py, the other idle. A worker that dies is started again on its socket;
one that fails while starting stops the server; SIGINT or SIGTERM stops every worker, then the supervisor.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from typing import NoReturn

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from nnlab.serve.hardening import UVICORN_LIMITS

OPTIONS_ENV = "NNLAB_SERVE_WORKER"  # each worker's app options (JSON), read by `nnlab.serve.app.worker_app`
SERVER_ENV = "NNLAB_SERVE_SUPERVISOR"  # uvicorn's options and the worker count (JSON)
APP = "nnlab.serve.app:worker_app"  # by name: each worker imports it, the supervisor never
log = logging.getLogger("uvicorn.error")


def supervise(app_options: dict, server_options: dict) -> NoReturn:
    """Become the supervisor: this process is replaced by `main` with these options."""
    os.environ[OPTIONS_ENV] = json.dumps(app_options)
    os.environ[SERVER_ENV] = json.dumps(server_options)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "nnlab.serve.workers"])


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port) that other workers' sockets share (SO_REUSEPORT)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_worker(sock: socket.socket, server_options: dict) -> None:
    """One worker: uvicorn serving the app on its socket until SIGINT or SIGTERM."""
    config = uvicorn.Config(APP, factory=True, **{**UVICORN_LIMITS, **server_options})
    uvicorn.Server(config).run(sockets=[sock])


def main() -> None:
    options = json.loads(os.environ.pop(SERVER_ENV))
    workers = options.pop("workers")
    logging.basicConfig(format="%(levelname)s:     %(message)s", level=logging.WARNING)
    try:
        sockets = [reuse_port_socket(options["host"], options["port"]) for _ in range(workers)]
    except OSError as exc:
        sys.exit(f"error: cannot listen on {options['host']}:{options['port']} ({exc.strerror})")
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter each: nothing of this one is shared

    def start(sock: socket.socket):
        process = spawn.Process(target=run_worker, args=(sock, options), name="nnlab-serve-worker")
        process.start()
        return process

    processes = [start(sock) for sock in sockets]
    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    failed = False
    while not stopping:
        time.sleep(0.5)
        for i, process in enumerate(processes):
            if process.exitcode is None or stopping:
                continue
            if process.exitcode == STARTUP_FAILURE:
                log.error("worker %d failed while starting (see above); stopping the server", process.pid)
                failed = True
                stopping.append(signal.SIGTERM)
                break
            log.warning("worker %d exited (%s); starting another", process.pid, process.exitcode)
            processes[i] = start(sockets[i])
    for process in processes:
        if process.exitcode is None:
            process.terminate()  # SIGTERM: uvicorn finishes the requests in flight, then exits
    for process in processes:
        process.join(timeout=30)
        if process.exitcode is None:
            process.kill()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
