"""Model registry: builders, local weights (state dict or safetensors), timm, schedules."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from nnlab.config import ModelConfig, validate
from nnlab.errors import ModelError
from nnlab.models import build_model, count_parameters
from nnlab.training.optim import apply_schedule, build_optimizer
from nnlab.training.schedule import Schedule


def test_timm_model_with_our_channels_and_classes():
    model = build_model(ModelConfig(name="timm:resnet10t"), in_chans=1, num_classes=7, image_size=32)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 7)


def test_unknown_names_are_clear():
    with pytest.raises(ModelError, match="unknown model 'lenett'"):
        build_model(ModelConfig(name="lenett"), 1, 10, 28)
    with pytest.raises(ModelError, match="timm has no model 'resnet1000'"):
        build_model(ModelConfig(name="timm:resnet1000"), 1, 10, 28)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_local_weights_are_loaded(tmp_path, suffix):
    source = build_model(ModelConfig(name="lenet"), 1, 10, 28)
    path = tmp_path / f"w{suffix}"
    if suffix == ".pt":
        torch.save(source.state_dict(), path)
    else:
        save_file(source.state_dict(), str(path))
    loaded = build_model(ModelConfig(name="lenet", weights=str(path)), 1, 10, 28)
    for (k, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_mismatched_or_missing_weights_fail_clearly(tmp_path):
    torch.save(build_model(ModelConfig(name="lenet"), 1, 10, 28).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ModelError, match="shape mismatch"):
        build_model(ModelConfig(name="lenet", weights=str(tmp_path / "w.pt")), 1, 5, 28)
    with pytest.raises(ModelError, match="file not found"):
        build_model(ModelConfig(name="lenet", weights=str(tmp_path / "nope.pt")), 1, 10, 28)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read"):
        build_model(ModelConfig(name="lenet", weights=str(tmp_path / "junk.pt")), 1, 10, 28)


def test_pretrained_offline_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable when imported (timm imported it already); without this the
    # hub retries the network for most of a minute before failing the same way
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="pretrained weights .*offline"):
        build_model(ModelConfig(name="timm:resnet10t", pretrained=True), 3, 10, 32)


def lrs(schedule: dict, epochs: int = 4, steps: int = 5, lr: float = 0.1, values=None) -> list[float]:
    cfg = validate({"optim": {"name": "sgd", "lr": lr}, "schedule": schedule, "train": {"epochs": epochs}})
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(cfg, model)
    plan = Schedule(cfg, steps)
    apply_schedule(opt, plan, 0)
    out = []
    for epoch in range(epochs):  # as the torch loop drives it
        for k in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            apply_schedule(opt, plan, epoch * steps + k + 1)
        plan.end_epoch(values[epoch] if values else None)
        apply_schedule(opt, plan, (epoch + 1) * steps)
    return out


def test_schedules():
    assert set(lrs({"name": "constant"})) == {0.1}
    step = lrs({"name": "step", "step_size": 2, "gamma": 0.5})
    assert step[:10] == [0.1] * 10 and step[10:] == pytest.approx([0.05] * 10)
    cosine = lrs({"name": "cosine", "warmup_epochs": 1})
    assert cosine[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])  # linear warm-up over epoch 1
    assert all(a >= b for a, b in zip(cosine[5:], cosine[6:]))  # then decays
    assert cosine[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 14 / 15)))
    onecycle = lrs({"name": "onecycle"})
    assert max(onecycle) == pytest.approx(0.1, rel=1e-3) and onecycle[0] < 0.01 and onecycle[-1] < 1e-3
    plateau = lrs({"name": "plateau", "patience": 0, "factor": 0.5}, values=[0.5, 0.5, 0.6, 0.6])
    # epoch 2 brings no gain: epochs 3 and 4 run at half the rate (epoch 3's gain keeps it there)
    assert plateau[:10] == [0.1] * 10 and plateau[10:] == pytest.approx([0.05] * 10)


def test_parameter_counts_of_trainable_subset():
    model = build_model(ModelConfig(name="lenet"), 1, 10, 28)
    for p in model.features.parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == 106_154
    assert count_parameters(model, trainable_only=True) == 106_154 - (6 * 9 + 6) - (16 * 6 * 9 + 16)
