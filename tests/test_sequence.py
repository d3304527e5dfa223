"""Stroke-sequence input (`data.input = "sequence"`) and models (stroke_rnn, stroke_gru): features on
hand-made drawings, padding that never changes a prediction, ONNX parity, and a run end to end."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from nnlab.cli.app import app
from nnlab.config import load_config, validate
from nnlab.ingest.writers import write_csv
from nnlab.models import build_model
from nnlab.store.format import StrokeStore
from nnlab.strokes.drawing import StrokeBatch
from nnlab.strokes.sequence import FEATURES, sequence_input
from nnlab.strokes.synth import synth_drawings
from nnlab.training import fit


def test_features_of_a_hand_made_drawing_and_its_padding():
    a = [np.array([[0, 0], [10, 0], [10, 10]]), np.array([[20, 20], [30, 20]])]
    b = [np.array([[5, 5], [6, 6]])]
    x = sequence_input(StrokeBatch.from_drawings([a, b]), max_points=256)
    assert x.shape == (2, 5, FEATURES)
    expected = np.array([[0, 0, 0, 0, 1], [10, 0, 0, 0, 1], [0, 10, 1, 0, 1], [10, 10, 0, 0, 1], [10, 0, 1, 0, 1]],
                        np.float32)
    expected[:, :2] /= 255
    assert np.allclose(x[0], expected)
    assert np.allclose(x[1, :2, :2], np.array([[5, 5], [1, 1]]) / 255) and x[1, :2, 2].tolist() == [0, 1]
    assert not x[1, 2:].any()  # padding is all zeros, valid column included


def test_time_becomes_seconds_between_points():
    d = [np.array([[0, 0, 0], [10, 0, 250]], float), np.array([[0, 50, 1000], [5, 50, 1100]], float)]
    x = sequence_input(StrokeBatch.from_drawings([d]), max_points=256)[0]
    assert np.allclose(x[:, 3], [0, 0.25, 0.75, 0.1])


def test_long_drawings_are_resampled_keeping_ends_and_pen_lifts():
    long = [np.column_stack([np.arange(200), np.zeros(200)]), np.column_stack([np.arange(150), np.full(150, 9)])]
    x = sequence_input(StrokeBatch.from_drawings([long]), max_points=64)[0]
    assert x.shape == (64, FEATURES) and x[:, 4].all()
    assert np.isclose(x[:, 0].sum() * 255, 149)  # the steps still add up to the last point
    assert np.isclose(x[:, 1].sum() * 255, 9)
    assert x[:, 2].sum() == 2 and x[-1, 2] == 1  # one lift where stroke 1 ends, one at the end


@pytest.mark.parametrize("name", ["stroke_rnn", "stroke_gru"])
def test_a_drawings_logits_do_not_depend_on_its_batch(name):
    torch.manual_seed(0)
    model = build_model(validate({"model": {"name": name, "rnn_hidden": 16, "rnn_layers": 2,
                                            "conv_filters": [8, 8], "conv_kernels": [5, 3]}}).model,
                        FEATURES, 7, 0).eval()
    short = [np.array([[0, 0], [40, 30], [80, 10]])]
    long = [np.column_stack([np.arange(0, 250, 5), np.arange(0, 250, 5)])]
    alone = model(torch.from_numpy(sequence_input(StrokeBatch.from_drawings([short]), 256)))
    together = model(torch.from_numpy(sequence_input(StrokeBatch.from_drawings([long, short]), 256)))
    assert torch.allclose(alone[0], together[1], atol=1e-5)


def test_stroke_rnn_exports_to_onnx_with_dynamic_batch_and_length(tmp_path):
    torch.manual_seed(0)
    model = build_model(validate({"model": {"name": "stroke_rnn", "rnn_hidden": 16}}).model, FEATURES, 5, 0).eval()
    x = torch.from_numpy(sequence_input(StrokeBatch.from_drawings(
        [[np.array([[0, 0], [40, 30], [80, 10]])], [np.column_stack([np.arange(0, 200, 9), np.arange(0, 200, 9)])]]),
        256))
    torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), input_names=["sequence"], output_names=["logits"],
                      dynamic_axes={"sequence": {0: "batch", 1: "points"}, "logits": {0: "batch"}}, opset_version=17,
                      dynamo=False)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for batch in (x, x[:1, :3]):
        got = session.run(None, {"sequence": batch.numpy()})[0]
        with torch.no_grad():
            want = model(batch).numpy()
        assert np.abs(got - want).max() < 1e-4


def test_a_sequence_run_end_to_end_with_an_ensemble_and_malformed_rows(tmp_path):
    drawings = []
    for word, shape in (("cat", "circle"), ("dog", "square"), ("ice cream", "star")):
        for d in synth_drawings([shape], 30, seed=1):
            d.word = word
            drawings.append(d)
    StrokeStore.from_drawings(drawings).save(tmp_path / "store")
    base = {"name": "seq", "data": {"kind": "strokes", "path": str(tmp_path / "store"), "batch_size": 16,
                                    "val_fraction": 0.2, "test_fraction": 0.0},
            "optim": {"name": "adam", "lr": 0.003}, "train": {"epochs": 1, "steps_per_epoch": 8, "threads": 1},
            "eval": {"main_metric": "map3"}}
    threads = torch.get_num_threads()
    try:
        seq = fit(load_config(None, ["data.input='sequence'", "model.name='stroke_gru'", "model.rnn_hidden=16",
                                     "model.rnn_layers=1"], base=copy.deepcopy(base)), out=tmp_path / "rnn")
        cnn = fit(load_config(None, ["model.name='lenet_alpha'", "data.image_size=28"], base=copy.deepcopy(base)),
                  out=tmp_path / "cnn")
    finally:
        torch.set_num_threads(threads)
    assert json.loads((seq.path / "metrics.json").read_text())["val"]["map3"] > 0
    test = synth_drawings(["star", "circle", "square"], 3, seed=9)
    for d in test:
        d.word = None
    write_csv(test, tmp_path / "test.csv", test=True)
    lines = (tmp_path / "test.csv").read_text().splitlines()
    lines.insert(3, '42,US,"[[[1, 2, 3], [4, 5]]]"')  # x and y differ in length
    (tmp_path / "test.csv").write_text("\n".join(lines) + "\n")
    runner = CliRunner()
    for runs, extra in (([seq.path], []), ([cnn.path, seq.path], ["--weights", "0.8,0.2"])):
        out = tmp_path / "sub.csv"
        res = runner.invoke(app, ["predict", *map(str, runs), str(tmp_path / "test.csv"), "--out", str(out), *extra])
        assert res.exit_code == 0, res.output
        rows = [r.split(",")[0] for r in out.read_text().splitlines()[1:]]
        assert rows == [line.split(",")[0] for line in lines[1:]]  # every row, in order, the bad one too


def test_nnlab_export_and_serve_a_sequence_model(tmp_path):
    from nnlab.inference.models.doodle import load_doodle_model
    from nnlab.inference.models.export import export_onnx

    drawings = []
    for word, shape in (("cat", "circle"), ("dog", "square")):
        for d in synth_drawings([shape], 20, seed=2):
            d.word = word
            drawings.append(d)
    StrokeStore.from_drawings(drawings).save(tmp_path / "store")
    cfg = load_config(None, base={
        "name": "seq-export", "data": {"kind": "strokes", "path": str(tmp_path / "store"), "input": "sequence",
                                       "batch_size": 8, "val_fraction": 0.3, "test_fraction": 0.0},
        "model": {"name": "stroke_rnn", "rnn_hidden": 16, "rnn_layers": 1, "conv_filters": [8], "conv_kernels": [3]},
        "train": {"epochs": 1, "steps_per_epoch": 3, "threads": 1}, "eval": {"main_metric": "map3"}})
    threads = torch.get_num_threads()
    try:
        run = fit(cfg, out=tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    result = export_onnx(run, tmp_path / "export")
    assert result.max_abs_diff < 1e-4 and result.checked_inputs > 3
    info = json.loads((tmp_path / "export" / "preprocessing.json").read_text())
    assert info["input"] == {"name": "sequence", "shape": ["batch", "points", FEATURES], "dtype": "float32"}
    onnx_model, torch_model = load_doodle_model(tmp_path / "export"), load_doodle_model(run.path)
    strokes = [[np.array([[10, 10], [200, 40], [120, 230]])], [np.array([[50, 50], [60, 200]])]]
    assert np.allclose(onnx_model.probabilities(strokes), torch_model.probabilities(strokes), atol=1e-5)
    assert [g[0] for g in onnx_model.guess(strokes, top_k=1)[0]][0] in ("cat", "dog")
