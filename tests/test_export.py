"""ONNX export: onnxruntime against torch on real drawings, the files beside the model, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from doodle_model import real_drawings, tiny_export, tiny_run, tiny_torch_model
from typer.testing import CliRunner

from nnlab.config import save_config, validate
from nnlab.datasets.strokes import to_model_input
from nnlab.errors import ModelError, NnlabError
from nnlab.inference.models import export as export_mod
from nnlab.runs.run import Run


@pytest.fixture(scope="module")
def export_dir() -> Path:
    return tiny_export()


def test_onnxruntime_matches_torch_on_real_drawings(export_dir, shared_data):
    import onnxruntime as ort

    info = json.loads((export_dir / "preprocessing.json").read_text())
    d = info["drawing"]
    rows = real_drawings(shared_data, ("cat", "bicycle", "The Eiffel Tower", "snowflake"), 16)
    drawings = [[np.asarray(s, dtype=np.int32).T for s in r["drawing"]] for r in rows]
    assert len(drawings) == 64
    x = to_model_input(drawings, size=d["image_size"], encoding=d["encoding"], line_width=d["line_width"],
                       antialias=d["antialias"], padding=d["padding"])
    assert x.shape == (64, d["channels"], d["image_size"], d["image_size"]) and x.max() > 0.5
    model = tiny_torch_model()
    session = ort.InferenceSession(str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (x, x[:1], x[5:12]):  # the batch axis is dynamic
        with torch.no_grad():
            ref = model(batch).numpy()
        got = session.run(None, {"image": batch.numpy()})[0]
        assert got.shape == ref.shape == (len(batch), 12)
        assert np.abs(got - ref).max() < 1e-4
    # and the model tells the drawings apart (the comparison is not between constants)
    assert np.ptp(ref, axis=0).max() > 1e-3


def test_export_files_describe_the_preprocessing(export_dir):
    run = Run.open(tiny_run())
    info = json.loads((export_dir / "preprocessing.json").read_text())
    assert (export_dir / "classes.txt").read_text().splitlines() == run.classes()
    d = run.config.data
    assert info["drawing"]["image_size"] == d.image_size == 32
    assert info["drawing"]["encoding"] == d.encoding
    assert info["drawing"]["line_width"] == pytest.approx(6 * 32 / 256)  # the default, resolved
    assert info["drawing"]["padding"] == d.padding
    assert info["drawing"]["channels"] == 1
    assert info["normalisation"] == {"scale": pytest.approx(1 / 255), "mean": 0.0, "std": 1.0,
                                     "formula": info["normalisation"]["formula"]}
    assert info["num_classes"] == 12 and info["input"]["shape"] == ["batch", 1, 32, 32]
    assert info["nnlab_version"] and info["opset"] == export_mod.OPSET
    assert info["parity"]["max_abs_diff"] < 1e-4 and info["parity"]["inputs"] > 10
    samples = [json.loads(line) for line in (export_dir / "samples.ndjson").read_text().splitlines()]
    assert samples and all(s["word"] in run.classes() for s in samples)
    import onnx

    model = onnx.load(str(export_dir / "model.onnx"))
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_parity_check_fails_when_onnx_differs():
    run = Run.open(tiny_run())
    model = tiny_torch_model()
    from nnlab.inference.models.doodle import Preprocessing

    prep = Preprocessing.from_config(run.config.data)

    class Off:  # a session whose outputs are slightly wrong
        def run(self, names, feeds):
            with torch.no_grad():
                return [model(torch.from_numpy(feeds["image"])).numpy() + 1e-3]

    with pytest.raises(ModelError, match="differ"):
        export_mod._parity(model, Off(), [prep.random_input(np.random.default_rng(0))])


def test_export_refuses_numpy_engine_runs(tmp_path):
    (tmp_path / "run").mkdir()
    cfg = validate({"name": "digits", "engine": "numpy", "data": {"kind": "digits"}, "model": {"name": "mlp"}})
    save_config(cfg, tmp_path / "run" / "config.toml")
    with pytest.raises(NnlabError, match="only torch runs"):
        export_mod.export_onnx(tmp_path / "run", tmp_path / "out")


def test_export_cli(tmp_path):
    from nnlab.cli import app

    runner = CliRunner()
    out = tmp_path / "exported"
    result = runner.invoke(app, ["export", str(tiny_run()), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"exported to {out}" in result.output and "onnxruntime matches torch" in result.output
    assert {p.name for p in out.iterdir()} == {"model.onnx", "classes.txt", "preprocessing.json", "samples.ndjson"}
    bad = runner.invoke(app, ["export", str(tiny_run()), "--format", "tflite", "--out", str(tmp_path / "x")])
    assert isinstance(bad.exception, NnlabError) and "only 'onnx'" in str(bad.exception)
    # an existing folder that is not an export is never overwritten
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    bad = runner.invoke(app, ["export", str(tiny_run()), "--out", str(tmp_path / "precious")])
    assert isinstance(bad.exception, NnlabError) and (tmp_path / "precious" / "notes.txt").exists()


def test_export_never_deletes_what_it_did_not_write(tmp_path, monkeypatch):
    from nnlab.cli import app

    runner = CliRunner()
    # a junk model.onnx beside a user's file is not an export: refused, both files kept
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "model.onnx").write_bytes(b"not a model")
    (junk / "important.txt").write_text("keep me")
    bad = runner.invoke(app, ["export", str(tiny_run()), "--out", str(junk)])
    assert isinstance(bad.exception, NnlabError) and "not an export nnlab wrote" in str(bad.exception)
    assert (junk / "important.txt").read_text() == "keep me" and (junk / "model.onnx").read_bytes() == b"not a model"
    # the working directory (and its parents) are never replaced, even when empty of other files
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    for target in (".", ".."):
        bad = runner.invoke(app, ["export", str(tiny_run()), "--out", target])
        assert isinstance(bad.exception, NnlabError) and "working directory" in str(bad.exception)
    assert (work / "notes.txt").read_text() == "mine"
    # a file is not a folder
    bad = runner.invoke(app, ["export", str(tiny_run()), "--out", str(work / "notes.txt")])
    assert isinstance(bad.exception, NnlabError) and "is a file" in str(bad.exception)
    # an export is replaced only with --overwrite, and nothing temporary is left beside it
    out = tmp_path / "exported"
    assert runner.invoke(app, ["export", str(tiny_run()), "--out", str(out)]).exit_code == 0
    again = runner.invoke(app, ["export", str(tiny_run()), "--out", str(out)])
    assert isinstance(again.exception, NnlabError) and "--overwrite" in str(again.exception)
    assert runner.invoke(app, ["export", str(tiny_run()), "--out", str(out), "--overwrite"]).exit_code == 0
    assert {p.name for p in out.iterdir()} == {"model.onnx", "classes.txt", "preprocessing.json", "samples.ndjson"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "junk", "work"]


def test_replace_dir_swaps_a_folder_whole(tmp_path):
    from nnlab.fileio import replace_dir

    old, new = tmp_path / "g", tmp_path / "new"
    old.mkdir()
    (old / "a").write_text("old")
    new.mkdir()
    (new / "a").write_text("new")
    replace_dir(new, old)
    assert (old / "a").read_text() == "new" and not new.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["g"]
