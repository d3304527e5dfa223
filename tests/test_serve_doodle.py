"""The doodle demo's router: its workers start with the app and stop when the app shuts down."""

from __future__ import annotations

import threading

from doodle_model import tiny_export
from fastapi.testclient import TestClient

from nnlab.serve.app import create_app


def _guessers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nnlab-guesser" and t.is_alive()]


def test_the_routers_batcher_stops_with_the_app():
    before = len(_guessers())
    app = create_app(tiny_export())
    with TestClient(app) as client:
        answer = client.post("/api/predict", json={"drawing": [[[0, 80, 200], [0, 255, 40]]], "top_k": 2})
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 2
        assert len(_guessers()) == before + 1  # the first guess started the batcher's worker
    assert len(_guessers()) == before  # the router's lifespan closed it at shutdown
