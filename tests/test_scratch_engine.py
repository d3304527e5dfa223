"""engine = "numpy": the same run directory as the torch engine, on real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnlab.config import load_config, validate
from nnlab.errors import ConfigError
from nnlab.runs.report import compare_table
from nnlab.runs.run import Run
from nnlab.scratch.serialize import load_model
from nnlab.training import fit

ROOT = Path(__file__).resolve().parents[1]


def files(run: Run) -> set[str]:
    """Relative file names, with checkpoint suffixes and metric values left out."""
    out = set()
    for p in run.path.rglob("*"):
        if p.is_file():
            name = str(p.relative_to(run.path))
            if name.startswith("checkpoints/"):
                name = "checkpoints/" + ("best.json" if p.suffix == ".json" else
                                         "best" if p.name.startswith("best-") else "last")
            out.add(name)
    return out


@pytest.fixture(scope="module")
def recipe_run(shared_data, tmp_path_factory) -> Run:
    cfg = load_config(ROOT / "recipes" / "digits-mlp-numpy.toml",
                      [f"data.path={json.dumps(str(shared_data / 'digits/uci-optdigits/optdigits.tra'))}",
                       f"data.test_path={json.dumps(str(shared_data / 'digits/uci-optdigits/optdigits.tes'))}"])
    return fit(cfg, out=tmp_path_factory.mktemp("np") / "run")


def test_offline_recipe_reaches_095_on_optdigits_test(recipe_run):
    metrics = recipe_run.read_json("metrics.json")
    assert metrics["engine"] == "numpy"
    assert metrics["data"]["sizes"]["test"] == 1797  # the official .tes rows
    assert metrics["test"]["accuracy"] >= 0.95


def test_same_files_as_a_torch_run(recipe_run, tmp_path):
    torch_cfg = recipe_run.config.model_copy(deep=True)
    torch_cfg.engine = "torch"
    torch_cfg.train.epochs = 1
    torch_run = fit(torch_cfg, out=tmp_path / "torch")
    assert files(recipe_run) == files(torch_run)
    table = compare_table([recipe_run, torch_run])
    assert "| numpy |" in table and "| torch |" in table


def test_best_checkpoint_is_a_loadable_npz(recipe_run):
    best = recipe_run.best_checkpoint()
    assert best.suffix == ".npz" and best.name.startswith("best-")
    model = load_model(best)
    with np.load(best, allow_pickle=False) as z:
        assert "architecture" in z.files
    assert model.layers[0].params()["weight"].shape == (256, 64)


def small_cfg(**train):
    return validate({"name": "np", "seed": 5, "engine": "numpy",
                     "data": {"kind": "digits", "image_size": 8, "batch_size": 64, "mean": 0.0, "std": 1.0},
                     "model": {"name": "mlp", "hidden": [32], "dropout": 0.3},
                     "optim": {"name": "adam", "lr": 0.01}, "schedule": {"name": "cosine"},
                     "train": {"epochs": 3} | train})


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    import nnlab.training.numpy_engine as engine

    full = fit(small_cfg(), out=tmp_path / "full")
    calls = {"n": 0}
    real = engine.fit_epoch

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "fit_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(small_cfg(), out=tmp_path / "part")
    monkeypatch.setattr(engine, "fit_epoch", real)
    part = Run.open(tmp_path / "part")
    assert len(part.history()) == 1
    fit(part.config, resume_run=part)
    a, b = load_model(full.path / "checkpoints/last.npz"), load_model(part.path / "checkpoints/last.npz")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and np.array_equal(va, vb), ka
    assert [r["train_loss"] for r in full.history()] == [r["train_loss"] for r in part.history()]


def test_unsupported_settings_are_named():
    cfg = small_cfg()
    cfg.model.name = "lenet"
    cfg.data.augment = True
    with pytest.raises(ConfigError, match=r"model.name = 'lenet'.*data.augment = true"):
        fit(cfg)


def test_train_threads_limits_blas_during_training(tmp_path, monkeypatch):
    import threadpoolctl

    import nnlab.training.numpy_engine as engine

    seen = []
    real = engine.fit_epoch

    def recording(*args, **kwargs):
        seen.append({i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"})
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "fit_epoch", recording)
    before = threadpoolctl.threadpool_info()
    fit(small_cfg(threads=1, epochs=2), out=tmp_path / "run")
    assert seen == [{1}, {1}]
    assert threadpoolctl.threadpool_info() == before  # the limit is lifted afterwards
