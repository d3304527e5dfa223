"""The core commands end to end through the real entry point (`nnlab.cli.main`, in process)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli as nnlab
from PIL import Image

CONFIG = """
name = "cli"
[data]
kind = "digits"
image_size = 16
batch_size = 64
[model]
name = "{model}"
[optim]
lr = 0.003
[train]
epochs = 2
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    out = []
    for model in ("lenet_alpha", "mlp"):
        cfg = root / f"{model}.toml"
        cfg.write_text(CONFIG.format(model=model))
        hidden = ["--set", "model.hidden=[64]"] if model == "mlp" else []  # an mlp option: refused for lenet
        proc = nnlab("run", cfg, "--out", root / model, *hidden)
        assert f"run directory: {root / model}" in proc.stdout and f"finished: {root / model}" in proc.stdout
        out.append(root / model)
    return tuple(out)


def test_report_and_compare(runs, tmp_path):
    text = nnlab("report", runs[0]).stdout
    assert "lenet_alpha" in text and "test" in text and "accuracy" in text
    table = nnlab("compare", *runs, "--out", tmp_path / "cmp.md").stdout
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| run | model | engine | val accuracy |") and "| test accuracy |" in lines[0]
    header = [c.strip() for c in lines[0].split("|")]
    col, val_col = header.index("test accuracy"), header.index("val accuracy")
    accs = [float(line.split("|")[col]) for line in lines[1:]]
    assert accs == sorted(accs, reverse=True) and len(accs) == 2
    metrics = {p.name: json.loads((p / "metrics.json").read_text()) for p in runs}
    for line in lines[2:]:
        cells = [c.strip() for c in line.split("|")]
        m = metrics[cells[1]]
        assert cells[col] == f"{m['test']['accuracy']:.4f}" and cells[val_col] == f"{m['val']['accuracy']:.4f}"
    assert (tmp_path / "cmp.md").read_text().strip() == table.strip()


def test_eval_matches_metrics_json(runs):
    import json

    text = nnlab("eval", runs[0]).stdout
    acc = float(next(line.split()[1] for line in text.splitlines() if line.startswith("accuracy")))
    assert acc == pytest.approx(json.loads((runs[0] / "metrics.json").read_text())["test"]["accuracy"], abs=5e-5)  # printed to 4 places


def test_predict_images_and_ensemble(runs, tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        Image.fromarray((digits.images[i] * 16).astype(np.uint8)).save(folder / f"d{i}.png")
    proc = nnlab("predict", runs[0], folder, "--out", tmp_path / "p.csv")
    assert "Warning" not in proc.stderr, proc.stderr  # e.g. torch's on non-writable arrays from PIL
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [r["id"] for r in rows] == [f"d{i}.png" for i in range(5)]
    probs = np.array([[float(r[f"p_{c}"]) for c in range(10)] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
    nnlab("predict", runs[0], runs[0], folder, "--out", tmp_path / "e.csv", "--weights", "1,3")
    assert (tmp_path / "e.csv").read_text() == (tmp_path / "p.csv").read_text()  # a run with itself
    bad = nnlab("predict", runs[0], folder, "--out", tmp_path / "x.csv", "--weights", "1,2", ok=False)
    assert bad.returncode == 2 and "need 1 non-negative weights" in bad.stderr


def test_summary_prints_layers_and_lenet_count(tmp_path):
    cfg = tmp_path / "l.toml"
    cfg.write_text(CONFIG.format(model="lenet").replace("image_size = 16", "image_size = 28"))
    text = nnlab("summary", cfg).stdout
    assert "features.0 (Conv2d)" in text and "(1, 6, 28, 28)" in text
    assert "total parameters: 106,154" in text


def test_models_lists_registry_and_timm():
    names = [line.split()[0] for line in nnlab("models", "lenet*", "--no-timm").stdout.splitlines()]
    assert names == ["lenet", "lenet_alpha", "lenet_beta", "lenet_delta", "lenet_gamma", "lenet_omicron"]
    assert "timm:mobilenetv3_small_050" in nnlab("models", "timm:mobilenetv3_small*").stdout.split()


def test_resume_command_on_finished_run_is_a_no_op(runs):
    before = (runs[1] / "history.csv").read_text()
    proc = nnlab("resume", runs[1])
    assert "is finished (2 epochs of 2); nothing to resume" in proc.stdout
    assert (runs[1] / "history.csv").read_text() == before


def test_debug_flag_shows_traceback(tmp_path):
    proc = nnlab("--debug", "report", tmp_path, ok=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_usage_errors_exit_2_with_click_message_not_a_traceback():
    for args, message in ((("data", "prepare", "x.ndjson"), "Missing option '--out'"),
                          (("run",), "Missing argument"), (("nosuch",), "No such command")):
        proc = nnlab(*args, ok=False)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
