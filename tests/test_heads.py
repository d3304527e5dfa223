"""Margin heads and the embedding model: cross-checked against pytorch-metric-learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nnlab.config import ModelConfig, load_config
from nnlab.errors import ConfigError, ModelError
from nnlab.models import build_model
from nnlab.models.heads import ArcFaceHead, CosFaceHead, EmbeddingModel, LinearHead, batch_hard_triplet_loss, make_head

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
pml_reducers = pytest.importorskip("pytorch_metric_learning.reducers")

N, D, C = 48, 16, 7


def _batch(seed: int = 0, dtype=torch.float32, far: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings, labels and class weights (C, D); the first `far` embeddings point almost opposite
    their class weight, so the ArcFace fallback branch (theta > pi - m) is exercised too."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(C, D, generator=g, dtype=dtype)
    labels = torch.randint(0, C, (N,), generator=g)
    emb = torch.randn(N, D, generator=g, dtype=dtype) * 3
    emb[:far] = -weight[labels[:far]] * 2 + 0.05 * torch.randn(far, D, generator=g, dtype=dtype)
    return emb, labels, weight


def _ours_and_pml(head, pml_loss, emb, labels, weight):
    """(our loss, PML loss) and the gradients of both w.r.t. the embeddings and the class weights."""
    head.weight.data = weight.clone()
    pml_loss.W.data = weight.T.clone().contiguous()  # PML stores W as (embedding_size, num_classes)
    e1, e2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    ours = F.cross_entropy(head(e1, labels), labels)
    theirs = pml_loss(e2, labels)
    ours.backward()
    theirs.backward()
    return ours, theirs, (e1.grad, e2.grad), (head.weight.grad, pml_loss.W.grad.T)


@pytest.mark.parametrize("margin,scale", [(0.5, 64.0), (0.3, 30.0), (0.2, 16.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_arcface_equals_pytorch_metric_learning(margin, scale, dtype):
    emb, labels, weight = _batch(1, dtype)
    head = ArcFaceHead(D, C, scale=scale, margin=margin).to(dtype)
    # PML gives the margin in degrees.
    pml = pml_losses.ArcFaceLoss(num_classes=C, embedding_size=D, margin=math.degrees(margin), scale=scale)
    cos = F.linear(F.normalize(emb), F.normalize(weight)).gather(1, labels[:, None])
    assert (cos < math.cos(math.pi - margin)).sum() >= 3, "the fallback branch must be exercised"
    ours, theirs, grad_e, grad_w = _ours_and_pml(head, pml, emb, labels, weight)
    assert ours.item() > 1.0  # a real loss, not a trivial zero
    assert abs(ours.item() - theirs.item()) < 1e-5
    torch.testing.assert_close(grad_e[0], grad_e[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_w[0], grad_w[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("margin,scale", [(0.35, 64.0), (0.2, 30.0)])
def test_cosface_equals_pytorch_metric_learning(margin, scale):
    emb, labels, weight = _batch(2)
    head = CosFaceHead(D, C, scale=scale, margin=margin)
    pml = pml_losses.CosFaceLoss(num_classes=C, embedding_size=D, margin=margin, scale=scale)
    ours, theirs, grad_e, grad_w = _ours_and_pml(head, pml, emb, labels, weight)
    assert abs(ours.item() - theirs.item()) < 1e-5
    torch.testing.assert_close(grad_e[0], grad_e[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_w[0], grad_w[1], rtol=1e-4, atol=1e-5)


def test_margin_changes_only_the_true_class_and_not_without_labels():
    emb, labels, weight = _batch(3)
    head = ArcFaceHead(D, C, scale=10.0, margin=0.4)
    head.weight.data = weight
    plain = head(emb)
    torch.testing.assert_close(plain, 10.0 * F.linear(F.normalize(emb), F.normalize(weight)))
    margined = head(emb, labels)
    changed = (margined - plain).abs() > 1e-6
    true_class = F.one_hot(labels, C).bool()
    assert not changed[~true_class].any()
    assert changed[true_class].all()
    assert (margined[true_class] < plain[true_class]).all()  # the margin always penalises the true class


def test_easy_margin_leaves_obtuse_angles_alone():
    emb, labels, weight = _batch(4)
    head = ArcFaceHead(D, C, scale=1.0, margin=0.5, easy_margin=True)
    head.weight.data = weight
    cos = head(emb)
    target = head(emb, labels).gather(1, labels[:, None])[:, 0]
    true_cos = cos.gather(1, labels[:, None])[:, 0]
    obtuse = true_cos <= 0
    assert obtuse.any() and (~obtuse).any()
    torch.testing.assert_close(target[obtuse], true_cos[obtuse])
    expected = torch.cos(torch.acos(true_cos[~obtuse]) + 0.5)
    torch.testing.assert_close(target[~obtuse], expected, rtol=1e-5, atol=1e-5)


def test_arcface_gradient_is_finite_when_embedding_equals_class_weight():
    head = ArcFaceHead(4, 3, scale=30.0, margin=0.5)
    emb = head.weight.detach()[[0, 1, 2]].clone().requires_grad_(True)  # cos = 1 exactly for the true class
    loss = F.cross_entropy(head(emb, torch.tensor([0, 1, 2])), torch.tensor([0, 1, 2]))
    loss.backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


def test_batch_hard_triplet_equals_pytorch_metric_learning():
    g = torch.Generator().manual_seed(5)
    emb = torch.randn(32, 8, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (32,), generator=g)
    labels[-1] = 99  # an anchor with no positive: both implementations leave it out
    miner = pml_miners.BatchHardMiner()
    loss_fn = pml_losses.TripletMarginLoss(margin=0.3, reducer=pml_reducers.MeanReducer())
    e1, e2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    ours = batch_hard_triplet_loss(e1, labels, 0.3)
    theirs = loss_fn(e2, labels, miner(e2, labels))
    assert ours.item() > 0
    assert abs(ours.item() - theirs.item()) < 1e-6
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(e1.grad, e2.grad, rtol=1e-4, atol=1e-7)


def test_batch_hard_triplet_without_positives_is_zero_with_a_graph():
    emb = torch.randn(4, 3, requires_grad=True)
    loss = batch_hard_triplet_loss(emb, torch.arange(4))
    assert loss.item() == 0.0
    loss.backward()  # still differentiable: a training step with such a batch must not fail


def test_make_head_defaults_and_bad_margin():
    assert isinstance(make_head("linear", 8, 3), LinearHead)
    assert make_head("arcface", 8, 3).margin == 0.5
    assert make_head("cosface", 8, 3).margin == 0.35
    with pytest.raises(ModelError, match="radians"):
        make_head("arcface", 8, 3, margin=2.0)


@pytest.mark.parametrize("name", ["timm:resnet10t", "lenet_alpha", "mlp"])
@pytest.mark.parametrize("head", ["linear", "arcface", "cosface"])
def test_embedding_model_from_config(name, head):
    cfg = ModelConfig(name=name, head=head, embedding_dim=12, dropout=0.1, hidden=[32])
    size = 64 if name.startswith("timm:") else 28  # a ResNet's last stage keeps 2x2 pixels at 64
    model = build_model(cfg, in_chans=1, num_classes=5, image_size=size)
    assert isinstance(model, EmbeddingModel)
    assert model.needs_labels is (head != "linear")
    x, y = torch.randn(6, 1, size, size), torch.tensor([0, 1, 2, 3, 4, 0])
    model.train()
    logits, extra = model(x, y)
    assert logits.shape == (6, 5) and extra.item() == 0.0
    (F.cross_entropy(logits, y) + extra).backward()
    model.eval()
    assert model(x).shape == (6, 5)
    emb = model.embed(x)
    assert emb.shape == (6, 12)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(6))
    if name != "mlp":  # (the mlp's own hidden BatchNorm layers need two images)
        model.train()
        model(x[:1], y[:1])  # a last batch of one image must not break the embedding's BatchNorm
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    assert dropouts == [0.1]  # model.dropout once, before the embedding; none left in the backbone


def test_triplet_term_is_added_and_weighted():
    torch.manual_seed(0)
    cfg = ModelConfig(name="mlp", hidden=[16], head="linear", embedding_dim=8, triplet_weight=2.0,
                      triplet_margin=0.5)
    model = build_model(cfg, in_chans=1, num_classes=3, image_size=8).eval()
    x, y = torch.randn(12, 1, 8, 8), torch.tensor([0, 1, 2] * 4)
    assert model.needs_labels
    _, extra = model(x, y)
    expected = 2.0 * batch_hard_triplet_loss(model.features(x), y, 0.5)
    assert extra.item() > 0
    torch.testing.assert_close(extra, expected)


def test_plain_models_are_unchanged_and_identity_split_needs_an_embedding_model():
    assert not isinstance(build_model(ModelConfig(name="lenet"), 1, 10, 28), EmbeddingModel)
    with pytest.raises(ConfigError, match="embedding model"):
        load_config(None, ['data.split="identity"'])
    load_config(None, ['data.split="identity"', 'model.head="arcface"'])
    load_config(None, ['data.split="identity"', "model.embedding_dim=64"])
