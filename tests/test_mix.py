"""MixUp / CutMix: soft targets that sum to 1, hard labels for the metrics, off in the last epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from nnlab.config import load_config
from nnlab.errors import ConfigError
from nnlab.training import fit
from nnlab.training.loop import train_one_epoch
from nnlab.training.mix import BatchMixer
from nnlab.training.schedule import Schedule

K = 10


def _cfg(*overrides: str):
    return load_config(None, ["data.kind=digits", "data.image_size=16", "data.batch_size=64", "train.epochs=3",
                              "loss.label_smoothing=0.1", *overrides])


def _smoothed(y: torch.Tensor, s: float = 0.1) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, K).float() * (1 - s) + s / K


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixed_targets_sum_to_one_and_mix_like_the_images(kind):
    mixer = BatchMixer(_cfg(f"data.{kind}=1.0"), K)
    gen = torch.Generator().manual_seed(0)
    np.random.seed(0)
    for _ in range(5):
        x0 = torch.rand(8, 1, 16, 16, generator=gen)
        y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])  # no label equals its mirror's: lam is readable
        x, target = mixer(x0.clone(), y, epoch=0)
        assert torch.allclose(target.sum(1), torch.ones(8))
        a, b = _smoothed(y), _smoothed(y.flip(0))
        lam = float(((target - b) * (a - b)).sum() / ((a - b) ** 2).sum())
        assert torch.allclose(target, lam * a + (1 - lam) * b, atol=1e-6)
        if kind == "mixup":
            assert torch.allclose(x, lam * x0 + (1 - lam) * x0.flip(0), atol=1e-6)
        else:  # every pixel is its own or the mirror's, the pasted share is 1 - lam
            own = torch.isclose(x, x0)
            assert (own | torch.isclose(x, x0.flip(0))).all()
            assert own[0].float().mean().item() == pytest.approx(lam, abs=1e-6)


def test_the_last_epochs_and_odd_batches_are_not_mixed():
    mixer = BatchMixer(_cfg("data.mixup=1.0", "data.mix_off_epochs=1"), K)
    x0, y = torch.rand(8, 1, 16, 16), torch.arange(8)
    assert mixer.active(0) and mixer.active(1) and not mixer.active(2)
    for x_in, y_in, epoch in ((x0, y, 2), (x0[:7], y[:7], 0)):
        x, target = mixer(x_in.clone(), y_in, epoch)
        assert torch.equal(x, x_in) and torch.allclose(target, _smoothed(y_in))


def test_training_metrics_use_the_hard_labels():
    # a rate of 1e-12: the model stays as it is, so its predictions can be replayed
    cfg = _cfg("data.mixup=0.8", "data.cutmix=1.0", "optim.name=sgd", "optim.lr=1e-12", "train.epochs=1")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, K))
    batches = [(torch.rand(16, 1, 16, 16), torch.randint(0, K, (16,))) for _ in range(4)]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-12)
    np.random.seed(3)
    stats = train_one_epoch(model, [(x.clone(), y) for x, y in batches], optimizer, Schedule(cfg, 4), None, SoftTargetCrossEntropy(), cfg,
                            "cpu", 0, 4, show=False, mixer=BatchMixer(cfg, K))
    np.random.seed(3)
    replay, correct, losses = BatchMixer(cfg, K), 0, []
    for x, y in batches:
        xm, target = replay(x.clone(), y, 0)
        with torch.no_grad():
            logits = model(xm)
        correct += int((logits.argmax(1) == y).sum())
        losses.append(float(SoftTargetCrossEntropy()(logits, target)))
    assert stats["accuracy"] == correct / 64
    assert stats["loss"] == pytest.approx(np.mean(losses), rel=1e-5)


def test_a_mixed_run_trains_and_evaluates_on_hard_labels(tmp_path):
    run = fit(_cfg("model.name=lenet", "data.mixup=0.2", "data.cutmix=1.0", "data.mix_off_epochs=1",
                   "train.epochs=2", "optim.lr=0.003"), out=tmp_path / "run", echo=False)
    history = run.history()
    assert len(history) == 2 and all(np.isfinite(r["train_loss"]) for r in history)
    assert 0 < history[-1]["val_accuracy"] <= 1


def test_mixing_needs_image_input_a_classifier_head_and_unmixed_epochs_to_spare():
    with pytest.raises(ConfigError, match="mix images: not with data.input = 'sequence'"):
        load_config(None, ["data.kind=synth", "data.input=sequence", 'model.name="stroke_gru"', "data.mixup=0.2"])
    with pytest.raises(ConfigError, match="need engine = 'torch' and a classifier head"):
        _cfg("data.cutmix=1.0", "model.head=arcface", "model.embedding_dim=16")
    with pytest.raises(ConfigError, match="data.mix_off_epochs = 3 must be < train.epochs = 3"):
        _cfg("data.mixup=0.2", "data.mix_off_epochs=3")
