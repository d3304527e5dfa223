"""The NumPy engine against torch, step for step, on real data (UCI optdigits).

Both networks start from the same weights (copied from NumPy to torch), see
the same batches in the same order, and have dropout off. Every step's loss
and, after 20 steps, every weight and running statistic must agree within
1e-5. Both sides compute in float64, so the comparison measures the algorithms
and not float32 rounding (which Adam's division by sqrt(v) amplifies for
near-zero gradients). Float32 runs are checked too: SGD holds 1e-5 on the
losses, Adam only tracks torch loosely (see its test).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from nnlab.scratch import SGD, Adam, AdamW, build_mlp, predict_logits, softmax_cross_entropy

torch = pytest.importorskip("torch")
nn = torch.nn

STEPS, BATCH, HIDDEN = 20, 64, [48, 32]

OPTIMIZERS = {
    "sgd-momentum": (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    "sgd-nesterov-wd": (SGD, torch.optim.SGD,
                        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    "adam": (Adam, torch.optim.Adam, {"lr": 0.01}),
    "adamw": (AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.05}),
}


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Small matrices: a second BLAS thread only spins, and badly so on a busy machine."""
    with threadpool_limits(1):
        yield


@functools.lru_cache(maxsize=1)
def load_optdigits(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(shared_data / "digits" / "uci-optdigits" / "optdigits.tra", delimiter=",",
                      skiprows=1, dtype=np.int64)
    return data[:, :-1] / 16.0, data[:, -1]  # counts 0..16 -> [0, 1]


def torch_twin(model, dtype) -> nn.Sequential:
    """The same network in torch, holding a copy of ``model``'s weights."""
    layers, width = [], None
    for spec in model.architecture():
        if spec["type"] == "Dense":
            layers.append(nn.Linear(spec["in_features"], spec["out_features"]))
        elif spec["type"] == "ReLU":
            layers.append(nn.ReLU())
        elif spec["type"] == "BatchNorm1d":
            layers.append(nn.BatchNorm1d(spec["num_features"], eps=spec["eps"],
                                         momentum=spec["momentum"]))
        else:
            raise AssertionError(f"no torch twin for {spec}")
    twin = nn.Sequential(*layers).to(dtype)
    result = twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()},
                                  strict=False)
    assert all(k.endswith("num_batches_tracked") for k in result.missing_keys) and not result.unexpected_keys
    return twin


def run_both(shared_data: Path, name: str, np_dtype, torch_dtype):
    X, y = load_optdigits(shared_data)
    X = X.astype(np_dtype)
    model = build_mlp(X.shape[1], HIDDEN, 10, dropout=0.0, seed=0, dtype=np_dtype)
    twin = torch_twin(model, torch_dtype)
    np_cls, torch_cls, kwargs = OPTIMIZERS[name]
    opt, topt = np_cls(model.params(), **kwargs), torch_cls(twin.parameters(), **kwargs)
    model.train(), twin.train()
    order = np.random.default_rng(0).permutation(len(X))
    losses = []
    for step in range(STEPS):
        idx = order[step * BATCH:(step + 1) * BATCH]
        loss, grad = softmax_cross_entropy(model.forward(X[idx]), y[idx])
        model.backward(grad)
        opt.step(model.grads())
        topt.zero_grad()
        tloss = nn.functional.cross_entropy(twin(torch.from_numpy(X[idx])), torch.from_numpy(y[idx]))
        tloss.backward()
        topt.step()
        losses.append((loss, tloss.item()))
    return X, model, twin, np.array(losses)


def max_weight_diff(model, twin) -> tuple[float, str]:
    theirs = twin.state_dict()
    diffs = {k: float(np.abs(v - theirs[k].numpy()).max()) for k, v in model.state_dict().items()}
    worst = max(diffs, key=diffs.get)
    return diffs[worst], worst


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_step_and_final_weights_match_torch_float64(shared_data, name):
    X, model, twin, losses = run_both(shared_data, name, np.float64, torch.float64)
    np.testing.assert_allclose(losses[:, 0], losses[:, 1], rtol=0, atol=1e-5)
    assert losses[-1, 0] < losses[0, 0] - 0.5, "the network did not learn: a vacuous comparison"
    diff, where = max_weight_diff(model, twin)
    assert diff < 1e-5, f"{where} differs by {diff:.2e} after {STEPS} steps"
    # and inference (eval mode: running statistics) agrees too
    twin.eval()
    with torch.no_grad():
        expected = twin(torch.from_numpy(X[:200])).numpy()
    np.testing.assert_allclose(predict_logits(model, X[:200]), expected, rtol=0, atol=1e-5)


def test_float32_sgd_matches_torch_float32(shared_data):
    _, model, twin, losses = run_both(shared_data, "sgd-momentum", np.float32, torch.float32)
    np.testing.assert_allclose(losses[:, 0], losses[:, 1], rtol=0, atol=1e-5)
    diff, where = max_weight_diff(model, twin)
    assert diff < 1e-4, f"{where} differs by {diff:.2e} after {STEPS} steps in float32"


def test_float32_adam_tracks_torch_float32(shared_data):
    """Only loosely: a Dense bias followed by BatchNorm has a true gradient of 0, so
    its float32 gradient is rounding noise of about eps's size, which Adam
    normalises into steps of size lr that differ between any two implementations."""
    _, model, twin, losses = run_both(shared_data, "adam", np.float32, torch.float32)
    np.testing.assert_allclose(losses[:, 0], losses[:, 1], rtol=0, atol=1e-2)
