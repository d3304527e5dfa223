"""Fine-tuning controls: layer-wise learning-rate decay and the unfreeze epoch."""

from __future__ import annotations

import pytest
import torch

from nnlab.config import load_config
from nnlab.device import load_torch_file
from nnlab.errors import ConfigError
from nnlab.models import build_model
from nnlab.training import fit
from nnlab.training.optim import apply_schedule, base_lr, build_optimizer, freeze_layers
from nnlab.training.schedule import Schedule


def _cfg(*overrides: str):
    return load_config(None, ["data.kind=digits", "data.image_size=16", "data.batch_size=64", "train.epochs=2",
                              "optim.lr=0.01", "schedule.name=cosine", *overrides])


def test_layer_decay_groups_scale_the_schedule_of_every_step():
    cfg = _cfg('model.name="timm:mobilenetv3_small_050"', "train.layer_decay=0.5", "optim.weight_decay=0.01")
    model = build_model(cfg.model, 1, 10, 16)
    optimizer = build_optimizer(cfg, model)
    scales = [g["lr_scale"] for g in optimizer.param_groups]
    layers = len(scales)
    assert layers > 5 and max(scales) == 1.0 and min(scales) == pytest.approx(0.5 ** (layers - 1))
    head = next(g for g in optimizer.param_groups if any(p is model.classifier.weight for p in g["params"]))
    stem = next(g for g in optimizer.param_groups if any(p is model.conv_stem.weight for p in g["params"]))
    assert head["lr_scale"] == 1.0 and stem["lr_scale"] == min(scales)
    assert all(g["weight_decay"] == 0.01 for g in optimizer.param_groups)  # optim's, on every tensor as without
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    schedule = Schedule(cfg, 10)
    for step in (0, 7, 19):
        apply_schedule(optimizer, schedule, step)
        assert base_lr(optimizer) == pytest.approx(schedule.lr(step))
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(schedule.lr(step) * group["lr_scale"])


def test_unfreeze_epoch_trains_the_frozen_layers_from_that_epoch(tmp_path):
    start = build_model(_cfg("model.name=lenet").model, 1, 10, 16)
    torch.save(start.state_dict(), tmp_path / "start.pt")
    cfg = _cfg("model.name=lenet", f'model.weights="{tmp_path / "start.pt"}"', "train.freeze_first=2",
               "train.unfreeze_epoch=1", "train.keep_last=2", "train.layer_decay=0.8")
    run = fit(cfg, out=tmp_path / "run", echo=False)
    layers = [m for m in start.modules() if any(True for _ in m.parameters(recurse=False))]
    frozen_names = [n for n, m in start.named_modules() if m in layers[:2]]
    e1, e2 = (load_torch_file(p)["model"] for p in sorted(run.checkpoints.glob("epoch-e*.pt")))
    initial = start.state_dict()
    for key in initial:
        frozen = key.rsplit(".", 1)[0] in frozen_names
        assert torch.equal(e1[key], initial[key]) == frozen, key  # epoch 1: only the unfrozen layers move
        assert not torch.equal(e2[key], initial[key]), key  # epoch 2: every layer trains
    # history's lr is the schedule's (half a cosine: half of optim.lr after one of two epochs), not a group's
    assert run.history()[0]["lr"] == pytest.approx(0.005)


def test_unfreeze_epoch_needs_frozen_layers_and_the_torch_engine():
    with pytest.raises(ConfigError, match="train.unfreeze_epoch needs frozen layers"):
        _cfg("train.unfreeze_epoch=1")
    with pytest.raises(ConfigError, match="apply to the torch engine only"):
        load_config(None, ["engine=numpy", 'model.name="mlp_numpy"', "train.layer_decay=0.7"])


def test_frozen_layers_without_unfreeze_stay_out_of_the_optimizer():
    cfg = _cfg("model.name=lenet", "train.freeze_first=2")
    model = build_model(cfg.model, 1, 10, 16)
    freeze_layers(model, 2)
    optimizer = build_optimizer(cfg, model)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == sum(p.requires_grad for p in model.parameters())
