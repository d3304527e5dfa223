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


def test_the_fast_path_answers_as_the_fastapi_route_does_with_every_protection(shared_data):
    """POST /api/predict is answered by `FastRoutes` before FastAPI's routing; a bare FastAPI app with the same
    router (the route itself) gives the same statuses and bodies, and only the hardened app adds the headers."""
    import json

    from fastapi import FastAPI

    from nnlab.inference.models.doodle import load_doodle_model
    from nnlab.serve.app import FastRoutes
    from nnlab.serve.doodle import doodle_router

    export = tiny_export()
    bare = FastAPI()
    bare.include_router(doodle_router(load_doodle_model(export)))
    hardened = create_app(export)
    layer, chain = hardened.guarded, []
    while layer is not None:  # the protections in front of FastAPI, down to FastAPI's own entry
        chain.append(type(layer).__name__)
        layer = getattr(layer, "app", None)
    assert chain == ["SecurityHeaders", "HostCheck", "BodyLimit", "FastRoutes", "partial"]
    row = json.loads((shared_data / "quickdraw" / "simplified" / "cat.ndjson").read_text().splitlines()[0])
    requests = [(json.dumps({"drawing": row["drawing"], "top_k": 3}), "application/json"),
                ('{"drawing": [[[1, 2], [3]]]}', "application/json"), ("{not json", "application/json"),
                (json.dumps({"drawing": row["drawing"]}), "text/plain"), ("", "application/json"),
                (json.dumps({"drawing": row["drawing"], "top_k": 10_000}), "application/json")]
    statuses = set()
    with TestClient(bare) as route, TestClient(hardened) as fast:
        for content, kind in requests:
            a = route.post("/api/predict", content=content, headers={"content-type": kind})
            b = fast.post("/api/predict", content=content, headers={"content-type": kind})
            assert (a.status_code, a.json()) == (b.status_code, b.json()), content[:40]
            statuses.add(b.status_code)
            assert b.headers["content-type"] == "application/json" and b.headers["x-content-type-options"] == "nosniff"
            assert "content-security-policy" in b.headers and "x-content-type-options" not in a.headers
        assert statuses == {200, 415, 422} and a.status_code == 422  # the last one: top_k beyond the classes
        too_big = fast.post("/api/predict", content=b"[" * (300 * 1024), headers={"content-type": "application/json"})
        assert too_big.status_code == 413 and too_big.headers["x-content-type-options"] == "nosniff"
        assert "/api/predict" in fast.get("/api/openapi.json").json()["paths"]  # the route documents it still


def test_a_fault_in_the_fast_path_is_a_500_with_the_security_headers(monkeypatch, caplog):
    """An error of the server's own in POST /api/predict (answered before FastAPI's error layer) is logged and
    answered 500 in the API's error shape, with nosniff and the CSP like every other answer."""
    from nnlab.serve.doodle import PredictEndpoint

    async def broken(self, content_type, raw):
        raise RuntimeError("a fault of the server's")

    monkeypatch.setattr(PredictEndpoint, "answer", broken)
    with TestClient(create_app(tiny_export())) as client:
        reply = client.post("/api/predict", json={"drawing": [[[0, 10], [0, 10]]]})
        assert client.get("/api/health").status_code == 200  # the server goes on
    assert reply.status_code == 500 and reply.json() == {"detail": "Internal Server Error"}
    assert reply.headers["x-content-type-options"] == "nosniff" and "content-security-policy" in reply.headers
    assert "a fault of the server's" in caplog.text


def test_an_error_page_of_fastapis_has_the_security_headers_too():
    """The protections run in front of FastAPI (`DemoApp`), so even FastAPI's own 500 page carries them."""
    app = create_app(tiny_export())

    @app.get("/api/broken")
    def broken():
        raise RuntimeError("a fault of the server's")

    with TestClient(app, raise_server_exceptions=False) as client:
        reply = client.get("/api/broken")
    assert reply.status_code == 500
    assert reply.headers["x-content-type-options"] == "nosniff" and "content-security-policy" in reply.headers
