"""`nnlab export --quantize int8`: the INT8 model's validation metric beside the float one's, refusal
beyond --max-drop, and the INT8 export served like a float one."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
from doodle_model import tiny_run
from fastapi.testclient import TestClient
from image_models import digits_run
from PIL import Image

from nnlab.inference.models.doodle import load_doodle_model, validation_drawings
from nnlab.inference.models.image import load_image_model, validation_set
from nnlab.inference.models.quantize import score
from nnlab.metrics import map_at_k_scores
from nnlab.runs.run import Run
from nnlab.serve.app import create_app

INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearConv",
            "ConvInteger", "DynamicQuantizeMatMul"}


def _ops(export) -> set[str]:
    return {n.op_type for n in onnx.load(str(export / "model.onnx")).graph.node}


def test_digits_int8_export_reports_both_scores_and_serves(cli, tmp_path):
    out = tmp_path / "int8"
    r = cli("export", digits_run(), "--out", out, "--quantize", "int8", "--max-drop", "0.05")
    assert "INT8 (" in r.stdout and "validation accuracy" in r.stdout
    q = json.loads((out / "preprocessing.json").read_text())["quantization"]
    assert q["dtype"] == "int8" and q["requested"] == "auto" and q["method"] in ("static", "dynamic")
    assert set(q["candidates"]) == {"static", "dynamic", "float"} and q["drop"] <= 0.05
    assert _ops(out) & INT8_OPS and q["int8_bytes"] < q["float_bytes"]
    # the INT8 score, recomputed independently through the export as `serve` loads it
    model = load_image_model(out)
    assert model.runtime.precision == "int8" and model.info()["precision"] == "int8"
    images, labels = validation_set(Run.open(digits_run()))
    pred = model.runtime.outputs(model.prep.to_input(images)).argmax(1)
    assert q["examples"] == len(labels) and abs(float((pred == labels).mean()) - q["int8_score"]) < 1e-9
    client = TestClient(create_app(out))
    assert client.get("/api/health").json()["precision"] == "int8"
    buf = io.BytesIO()
    Image.fromarray(images[0]).save(buf, format="PNG")
    body = client.post("/api/predict?top_k=3", content=buf.getvalue(), headers={"content-type": "image/png"}).json()
    assert len(body["predictions"]) == 3


def test_a_drop_beyond_max_drop_writes_nothing(cli, tmp_path):
    out = tmp_path / "refused"
    r = cli("export", digits_run(), "--out", out, "--quantize", "int8", "--quantize-method", "dynamic",
            "--max-drop", "-1", ok=False)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--max-drop -1" in lines[0] and "nothing was written" in lines[0], lines
    assert not out.exists() and not list(tmp_path.iterdir())


def test_doodle_int8_export_scores_map3_and_guesses(cli, tmp_path):
    out = tmp_path / "doodle-int8"
    cli("export", tiny_run(), "--out", out, "--quantize", "int8", "--quantize-method", "dynamic", "--max-drop", "0.05")
    q = json.loads((out / "preprocessing.json").read_text())["quantization"]
    assert q["metric"] == "map3" and q["method"] == "dynamic" and "DynamicQuantizeLinear" in _ops(out)
    model = load_doodle_model(out)
    assert model.info()["precision"] == "int8"
    run = Run.open(tiny_run())
    drawings = validation_drawings(run.config, limit=2000)
    labels = np.array([run.classes().index(d.word) for d in drawings])
    assert abs(map_at_k_scores(labels, model.probabilities([d.strokes for d in drawings])) - q["int8_score"]) < 1e-9
    assert len(model.guess([drawings[0].strokes])[0]) == 3


def test_rank1_is_the_nearest_other_embedding():
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.8, 0.6]], np.float32)
    labels = np.array([0, 0, 1, 1, 1])
    # nearest others: 1, 0, 3, 2, 1 -> right for the first four, wrong for the last
    assert score(emb, labels, "embedding") == ("rank1", 0.8)
