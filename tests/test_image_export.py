"""ONNX export of image models: a digits classifier and a faces embedding model, onnxruntime against
torch on the runs' real validation images, the files beside the model, the CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from image_models import digits_export, digits_run, faces_export, faces_run
from typer.testing import CliRunner

from nnlab.datasets.images import make_transform
from nnlab.inference.models.image import load_image_model, validation_images
from nnlab.runs.run import Run
from nnlab.runs.trained import load_trained


def _reference_input(run: Run, limit: int = 40) -> torch.Tensor:
    """The run's validation images through training's own evaluation transform (built here from the config)."""
    d = run.config.data
    transform = make_transform(train=False, image_size=d.image_size, channels=d.channels, augment=False,
                               mean=d.mean, std=d.std)
    return torch.stack([transform(im) for im in validation_images(run, limit)])


def _session(export):
    return ort.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"])


def test_digits_classifier_logits_match_torch():
    run, export = Run.open(digits_run()), digits_export()
    x = _reference_input(run)
    model = load_trained(run)
    session = _session(export)
    for batch in (x, x[:1], x[3:10]):  # dynamic batch
        with torch.no_grad():
            ref = model(batch).numpy()
        got = session.run(["logits"], {"image": batch.numpy()})[0]
        assert got.shape == ref.shape == (len(batch), 10)
        assert np.abs(got - ref).max() < 1e-4
    assert np.ptp(ref, axis=0).max() > 1e-2  # the outputs vary: not a comparison of constants
    info = json.loads((export / "preprocessing.json").read_text())
    assert info["task"] == "classifier" and info["output"]["name"] == "logits"
    d = run.config.data
    assert {k: info["image"][k] for k in ("image_size", "channels", "mean", "std")} == {
        "image_size": d.image_size, "channels": d.channels, "mean": d.mean, "std": d.std}
    assert d.image_size == 28 and "antialias" in info["image"]["resize"]
    assert info["normalisation"]["formula"] == "input = (pixel / 255 - mean) / std"
    assert info["parity"]["max_abs_diff"] < 1e-4 and info["parity"]["inputs"] > 10
    assert (export / "classes.txt").read_text().splitlines() == run.classes() == [str(i) for i in range(10)]
    graph = onnx.load(str(export / "model.onnx"))
    onnx.checker.check_model(graph)
    assert graph.graph.input[0].name == "image" and graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param


def test_faces_embedding_is_unit_and_matches_torch(shared_data):
    run, export = Run.open(faces_run()), faces_export()
    x = _reference_input(run)
    model = load_trained(run)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model.embed(x), dim=1).numpy()
    session = _session(export)
    assert [o.name for o in session.get_outputs()] == ["embedding"]
    for lo, hi in ((0, len(x)), (0, 1), (5, 17)):
        got = session.run(None, {"image": x[lo:hi].numpy()})[0]
        assert got.shape == (hi - lo, 128)
        assert np.abs(got - ref[lo:hi]).max() < 1e-4
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    info = json.loads((export / "preprocessing.json").read_text())
    assert info["task"] == "embedding" and info["output"]["dimension"] == 128 and info["output"]["l2_normalised"]
    assert info["image"]["image_size"] == 32 and info["image"]["channels"] == 1
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert info["verification"]["threshold_at_fpr"] == metrics["test"]["threshold_at_fpr"]
    assert set(metrics["test"]["threshold_at_fpr"]) == {"0.01", "0.001"}
    # the run (torch) and its export (onnxruntime) are the same model: same fingerprint, same embeddings
    torch_model, onnx_model = load_image_model(run.path), load_image_model(export)
    assert torch_model.fingerprint == onnx_model.fingerprint == info["fingerprint"]
    assert (torch_model.backend, onnx_model.backend) == ("torch", "onnxruntime")
    images = validation_images(run, 8)
    assert np.abs(torch_model.embed(images) - onnx_model.embed(images)).max() < 1e-4
    assert load_image_model(digits_run()).fingerprint != torch_model.fingerprint


def test_export_cli_on_a_classifier(tmp_path):
    from nnlab.cli import app

    out = tmp_path / "digits-onnx"
    result = CliRunner().invoke(app, ["export", str(digits_run()), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "onnxruntime matches torch" in result.output
    assert {p.name for p in out.iterdir()} == {"model.onnx", "classes.txt", "preprocessing.json"}


def test_classifier_refuses_to_embed_and_embedder_to_classify(shared_data):
    from nnlab.errors import NnlabError

    with pytest.raises(NnlabError, match="not an embedding model"):
        load_image_model(digits_export()).embed(validation_images(Run.open(digits_run()), 2))
    with pytest.raises(NnlabError, match="identifies people against a gallery"):
        load_image_model(faces_export()).probabilities(validation_images(Run.open(faces_run()), 2))
