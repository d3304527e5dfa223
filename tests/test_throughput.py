"""Where an epoch's time goes (data_wait_fraction, model images/s, the one-time hint) and the GPU
switches (channels_last, compile, loader options), on tiny CPU runs of scikit-learn's digits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import nnlab.training.loop as train_mod
from nnlab.config import load_config, validate
from nnlab.datasets import build_data
from nnlab.device import prepare_model
from nnlab.errors import ConfigError, NnlabError
from nnlab.models import build_model
from nnlab.training import fit
from nnlab.training.throughput import DATA_WAIT_HINT, data_wait_hint

SLEEP = 0.4  # seconds each training batch is held back in the slow-loader test


def digits_cfg(data=None, **train):
    return validate({"name": "t", "seed": 0, "data": {"kind": "digits", "image_size": 16, "batch_size": 64} | (data or {}),
                     "model": {"name": "lenet_alpha"}, "optim": {"name": "adam", "lr": 0.003},
                     "train": {"epochs": 2, "keep_best": 0} | train})


class SlowLoader:
    """A train loader whose every batch takes SLEEP seconds longer to arrive: a known data wait."""

    def __init__(self, loader):
        self.loader, self.sampler = loader, loader.sampler
        self.batches = 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            time.sleep(SLEEP)
            self.batches += 1
            yield batch


def test_history_records_data_wait_and_model_speed(tmp_path):
    run = fit(digits_cfg(steps_per_epoch=5), out=tmp_path / "run")
    rows = run.history()
    assert len(rows) == 2
    for r in rows:
        assert 0 <= r["data_wait_fraction"] < 1
        # model images/s counts the time not spent waiting: together they give the wall-clock speed
        assert r["model_images_per_second"] * (1 - r["data_wait_fraction"]) == pytest.approx(r["images_per_second"])
    header = (run.path / "history.csv").read_text().splitlines()[0].split(",")
    assert "data_wait_fraction" in header and "model_images_per_second" in header
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["data_wait_fraction"] == pytest.approx(sum(r["data_wait_fraction"] for r in rows) / 2)


def test_slow_loader_is_measured_and_hinted_once(tmp_path, monkeypatch, capsys):
    slow = {}

    def build_slow(*args, **kwargs):
        data = build_data(*args, **kwargs)
        data.loaders["train"] = slow["loader"] = SlowLoader(data.loaders["train"])
        return data

    monkeypatch.setattr(train_mod, "build_data", build_slow)
    run = fit(digits_cfg(steps_per_epoch=3), out=tmp_path / "run")
    rows = run.history()
    assert slow["loader"].batches == 6
    for r in rows:
        waited = r["data_wait_fraction"] * r["epoch_seconds"]
        assert waited >= 0.95 * SLEEP * 3  # at least the sleeps, measured by timestamps alone
        assert r["data_wait_fraction"] > DATA_WAIT_HINT  # a lenet step on 64 digits takes far less than 0.4 s
    err = capsys.readouterr().err
    assert err.count("waited for data") == 1, err  # once per run, not once per epoch
    assert "data.num_workers (now 0" in err


def test_hint_names_the_stroke_fixes_and_stays_quiet_below_the_threshold():
    cfg = validate({"data": {"kind": "synth", "num_workers": 2, "image_size": 64, "encoding": "time-decay"}})
    assert data_wait_hint(cfg, 0, {"seconds": 1.0, "data_wait_fraction": DATA_WAIT_HINT}) is None
    text = data_wait_hint(cfg, 4, {"seconds": 1.0, "data_wait_fraction": 0.5})
    assert "epoch 5" in text and "50%" in text and "data.image_size (now 64)" in text and "'time-decay'" in text


def test_loader_options_reach_the_dataloader():
    data = build_data(digits_cfg(data={"num_workers": 1, "prefetch_factor": 3, "persistent_workers": False}))
    loader = data.loaders["train"]
    assert (loader.num_workers, loader.prefetch_factor, loader.persistent_workers) == (1, 3, False)
    assert not loader.pin_memory  # only a CUDA trainer pins
    assert build_data(digits_cfg(), pin_memory=True).loaders["train"].pin_memory
    strokes = build_data(validate({"data": {"kind": "synth", "classes": 3, "per_class": 20, "num_workers": 1,
                                            "prefetch_factor": 4}}), pin_memory=True).loaders["train"]
    assert (strokes.prefetch_factor, strokes.persistent_workers, strokes.pin_memory) == (4, True, True)
    # without workers the options that need them are left out (torch would reject them)
    assert build_data(digits_cfg(data={"prefetch_factor": 3})).loaders["train"].prefetch_factor is None


def test_channels_last_lays_out_weights_and_trains(tmp_path):
    model = prepare_model(build_model(digits_cfg().model, 1, 10, 16), "cpu", channels_last=True)
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not all(w.is_contiguous() for w in convs)  # (one input channel is both layouts at once)
    plain = fit(digits_cfg(epochs=1), out=tmp_path / "plain").history()[0]
    nhwc = fit(digits_cfg(epochs=1, channels_last=True), out=tmp_path / "nhwc").history()[0]
    # the same arithmetic in another layout: the same training to float rounding
    assert nhwc["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-4)


def test_compile_flag_compiles_the_model_in_place(tmp_path, monkeypatch):
    # Dynamo traces the real model; the "eager" backend skips inductor's C++ code generation, which
    # takes minutes on a busy CPU (gpu_check.py runs the real thing on CUDA).
    seen = []
    real = nn.Module.compile

    def eager_compile(self, *args, **kwargs):
        seen.append(kwargs.get("mode"))
        return real(self, *args, **kwargs | {"backend": "eager", "mode": None})

    monkeypatch.setattr(nn.Module, "compile", eager_compile)
    run = fit(digits_cfg(epochs=1, compile=True, compile_mode="reduce-overhead"), out=tmp_path / "run")
    assert seen == ["reduce-overhead"]
    state = torch.load(run.checkpoints / "last.pt", weights_only=True)["model"]
    assert not any(k.startswith("_orig_mod") for k in state)  # checkpoints keep the plain model's keys
    assert run.history()[0]["train_loss"] < 2.3  # it trained (chance is ln 10 = 2.303)


def test_flags_rejected_cleanly_where_unsupported(tmp_path, cli, monkeypatch):
    with pytest.raises(ConfigError, match="train.channels_last and train.compile apply to the torch engine only"):
        validate({"engine": "numpy", "model": {"name": "mlp"}, "train": {"compile": True}})
    cfg = tmp_path / "exp.toml"
    cfg.write_text('name = "c"\n[data]\nkind = "digits"\n[train]\nepochs = 1\ncompile = true\n')
    # no C++ compiler on PATH: torch.compile cannot build CPU kernels, so the run stops before it starts
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    proc = cli("run", cfg, "--out", tmp_path / "run", ok=False)
    assert proc.returncode == 2, proc.stderr
    assert "train.compile on the CPU needs a C++ compiler" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_compile_rejected_where_dynamo_is_unsupported(monkeypatch):
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    with pytest.raises(NnlabError, match=r"torch.compile does not support Python .* set train.compile = false"):
        prepare_model(nn.Linear(2, 2), "cpu", compile=True)



@pytest.mark.parametrize("name", ["quickdraw", "quickdraw-large"])
def test_quickdraw_recipes_validate_and_build(name):
    cfg = load_config(Path(__file__).resolve().parents[1] / "recipes" / f"{name}.toml")
    assert cfg.train.channels_last and cfg.data.persistent_workers and cfg.data.num_workers >= 8
    if name == "quickdraw-large":
        assert cfg.data.batch_size * cfg.train.grad_accum == 1024 and cfg.data.image_size == 128
    model = build_model(cfg.model, cfg.data.channels, 340, cfg.data.image_size).eval()
    with torch.no_grad():
        assert model(torch.rand(2, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)).shape == (2, 340)
