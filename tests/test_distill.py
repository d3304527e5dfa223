"""Knowledge distillation: the loss against a hand computation, the teachers' mean and renormalised input,
and a distilled run through predict, ONNX export and the image demo's API."""

from __future__ import annotations

import io
import json
import math
import tomllib

import numpy as np
import pytest
import torch
from conftest import ROOT
from fastapi.testclient import TestClient
from image_models import digits_run
from PIL import Image
from torch import nn

from nnlab.api import TrainedRun
from nnlab.config import load_config
from nnlab.inference.models.export import export_onnx
from nnlab.inference.models.image import ImagePreprocessing, validation_images
from nnlab.runs.run import Run
from nnlab.runs.trained import load_trained
from nnlab.serve.app import create_app
from nnlab.training.distill import Teachers, distill_loss

RECIPE = ROOT / "recipes" / "digits-lenet.toml"


def test_distill_loss_matches_a_hand_computed_example():
    student = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    teacher = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    T, alpha, hard = 2.0, 0.3, torch.tensor(1.5)
    kl = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        z = [math.exp(v / T) for v in s_row]
        q = [v / sum(z) for v in z]  # softmax(student / T)
        kl += sum(p * math.log(p / qi) for p, qi in zip(t_row, q))
    expected = (1 - alpha) * 1.5 + alpha * T * T * kl / 2  # KL averaged over the two rows
    assert distill_loss(hard, student, teacher, T, alpha).item() == pytest.approx(expected, rel=1e-6)
    assert distill_loss(hard, student, teacher, T, 0.0).item() == pytest.approx(1.5)


def test_teachers_average_their_softened_probabilities_on_renormalised_input():
    teacher = digits_run()
    cfg = load_config(RECIPE, ["data.mean=0.3", "data.std=0.4", f'train.distill.teachers=["{teacher}"]',
                               "train.distill.temperature=3.0"])
    teachers = Teachers(cfg, Run.open(teacher).classes(), "cpu")
    x = torch.randn(4, 1, 28, 28)
    model = load_trained(Run.open(teacher))
    with torch.no_grad():  # the teacher was trained with mean = std = 0.5: pixel / 255 = 0.4 x + 0.3
        expected = torch.softmax(model((x * 0.4 + 0.3 - 0.5) / 0.5) / 3.0, 1)
    assert torch.allclose(teachers.probs(x), expected, atol=1e-5)
    a, b = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    teachers.models, teachers.shifts, teachers.extra_of = nn.ModuleList([a, b]), [(1.0, 0.0)] * 2, [None] * 2
    with torch.no_grad():
        mean = (torch.softmax(a(x) / 3.0, 1) + torch.softmax(b(x) / 3.0, 1)) / 2
    assert torch.allclose(teachers.probs(x), mean, atol=1e-6)


def test_a_teacher_of_another_input_is_refused_in_one_line(cli, tmp_path):
    result = cli("distill", digits_run(), "--config", RECIPE, "--set", "data.image_size=16", "--out",
                 tmp_path / "student", ok=False)
    assert result.returncode == 2
    assert "takes another model input: data.image_size 28 (student 16)" in result.stderr
    assert cli("distill", tmp_path, "--config", RECIPE, ok=False).returncode == 2  # not a run directory


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_a_distilled_run_predicts_exports_and_serves(cli, tmp_path):
    teacher = digits_run()
    out = tmp_path / "student"
    cli("distill", teacher, "--config", RECIPE, "--set", "train.epochs=1",
        "--temperature", "2", "--out", out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distill"] == {"teachers": [str(teacher.resolve())], "temperature": 2.0, "alpha": 0.5}
    assert tomllib.loads((out / "config.toml").read_text())["train"]["distill"]["teachers"] == [str(teacher.resolve())]
    assert metrics["test"]["accuracy"] > 0.3  # one epoch of a LeNet: well above chance (0.1)

    run = Run.open(out)
    images = validation_images(run, 4)
    predictions = TrainedRun(out).predict(images)
    model, prep = load_trained(run), ImagePreprocessing.from_config(run.config.data)
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(prep.to_input(images))), 1).numpy()
    assert np.allclose(predictions.probs, probs, atol=1e-5)

    export = export_onnx(out, tmp_path / "export").out_dir
    client = TestClient(create_app(export))
    for image, p in zip(images, probs):
        r = client.post("/api/predict?top_k=3", content=_png(image), headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text
        assert [x["label"] for x in r.json()["predictions"]] == [run.classes()[i] for i in np.argsort(-p)[:3]]


SYNTH = ["data.kind=synth", "data.classes=6", "data.per_class=20", "data.image_size=32", "data.batch_size=32",
         "data.augment=true", "data.test_fraction=0.0", "train.epochs=1", "train.steps_per_epoch=3", "train.threads=1"]


def test_a_sequence_teacher_gets_its_input_from_the_same_augmented_drawings(tmp_path):
    from nnlab.datasets import build_data
    from nnlab.datasets.strokes import StrokeDataset
    from nnlab.training import fit

    teacher = fit(load_config(None, [*SYNTH, "data.input=sequence", "model.name=stroke_gru", "model.rnn_hidden=16",
                                     "model.rnn_layers=1", "data.max_points=64"]), out=tmp_path / "seq", echo=False)
    student = load_config(None, [*SYNTH, 'model.name="timm:mobilenetv3_small_050"',
                                 f'train.distill.teachers=["{teacher.path}"]'])
    data = build_data(student, tmp_path)
    dataset = data.loaders["train"].dataset
    request = (np.arange(8), 5)
    x, y, idx, extras = dataset[request]
    assert x.shape == (8, 1, 32, 32) and len(extras) == 1
    as_teacher = StrokeDataset(dataset.store, dataset.indices, augment=dataset.augment, seed=dataset.seed,
                               max_points=64)  # the teacher's input from the same augmentation seed
    assert torch.equal(extras[0], as_teacher[request][0])
    teachers = Teachers(student, data.classes, "cpu")
    assert teachers.extra_of == [0]
    with torch.no_grad():
        expected = torch.softmax(load_trained(Run.open(teacher.path))(extras[0]) / 4.0, 1)
    assert torch.allclose(teachers.probs(x, extras), expected, atol=1e-6)
    run = fit(student, out=tmp_path / "student", echo=False)  # the loop feeds each teacher its own input
    assert json.loads((run.path / "metrics.json").read_text())["distill"]["teachers"] == [str(teacher.path)]
