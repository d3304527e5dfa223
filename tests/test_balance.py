"""Balanced first choices (`nnlab predict --balance`): known answers, optimality against scipy's
linear_sum_assignment, and the cap itself."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from nnlab.errors import DataError
from nnlab.inference.kaggle.balance import balanced_top_k


def test_known_answer_moves_the_least_confident_rows():
    # Every row prefers class 0; two may keep it. The rows that lose least by moving move.
    probs = np.array([[0.90, 0.10], [0.60, 0.40], [0.80, 0.20], [0.55, 0.45]])
    out = balanced_top_k(probs, k=2)
    assert out.share == 2
    assert out.top[:, 0].tolist() == [0, 1, 0, 1]
    assert out.top[:, 1].tolist() == [1, 0, 1, 0]
    assert out.changed_first == 2 and out.changed_top == 2


def test_already_balanced_predictions_are_unchanged():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=8) * 0.1
    probs[np.arange(8), np.arange(8) % 4] += 1  # two rows per class, each confident
    probs /= probs.sum(axis=1, keepdims=True)
    out = balanced_top_k(probs, k=3)
    assert out.changed_top == 0
    assert np.array_equal(out.top[:, 0], np.arange(8) % 4)


@pytest.mark.parametrize("seed", range(4))
def test_assignment_is_within_a_percent_of_linear_sum_assignment(seed):
    rng = np.random.default_rng(seed)
    n, c = 600, 20
    probs = rng.dirichlet(np.full(c, 0.3), size=n)
    probs[:, 0] *= 4  # a model that over-predicts class 0
    probs /= probs.sum(axis=1, keepdims=True)
    out = balanced_top_k(probs, k=1)
    share = out.share
    assert np.bincount(out.top[:, 0], minlength=c).max() <= share
    logp = np.log(probs)
    # the exact optimum: every class replicated `share` times, one column per seat
    rows, cols = linear_sum_assignment(-np.repeat(logp, share, axis=1))
    best = logp[rows, cols // share].sum()
    ours = logp[np.arange(n), out.top[:, 0]].sum()
    assert ours <= best + 1e-6  # no capped assignment beats the optimum
    assert best - ours <= 0.01 * abs(best)  # and ours is within 1% of it


def test_cap_holds_at_kaggle_shape_and_rows_stay_in_place():
    rng = np.random.default_rng(1)
    n, c = 3400, 340
    logits = rng.normal(size=(n, c)).astype(np.float32)
    logits[:, :5] += 2.0  # five favourite classes
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    out = balanced_top_k(probs, k=3)
    assert out.share == 10
    assert np.bincount(out.top[:, 0], minlength=c).max() <= 10
    assert out.changed_first > 0
    # each row's own probabilities decide its guesses: permuting rows permutes the answer
    perm = rng.permutation(n)
    again = balanced_top_k(probs[perm], k=3)
    assert np.array_equal(again.top[:, 0], out.top[perm, 0])


def test_impossible_share_is_a_clear_error():
    with pytest.raises(DataError, match="cannot hold"):
        balanced_top_k(np.full((5, 2), 0.5), k=1, share=2)


def test_balance_never_changes_a_first_choice_when_no_class_is_over_its_cap():
    from nnlab.inference.kaggle.balance import balanced_top_k

    # one cat drawing predicted "cat dog banana" stays so (it became "apple banana bee" before)
    classes = ["apple", "banana", "bee", "cat", "dog"]
    probs = np.array([[0.02, 0.08, 0.01, 0.75, 0.14]])
    out = balanced_top_k(probs, 3)
    assert [classes[i] for i in out.top[0]] == ["cat", "dog", "banana"] and out.changed_top == 0
    rng = np.random.default_rng(0)
    for _ in range(200):  # fewer rows than classes, each with its own first choice: nothing to balance
        c = int(rng.integers(5, 60))
        n = int(rng.integers(1, c))
        p = rng.dirichlet(np.full(c, 0.3), size=n)
        first = p.argmax(axis=1)
        if np.bincount(first, minlength=c).max() > 1:
            continue
        got = balanced_top_k(p, 3)
        assert (got.top[:, 0] == first).all() and got.changed_first == 0
    # a class over its cap is still balanced
    over = np.tile([0.9, 0.05, 0.05], (6, 1)) + rng.uniform(0, 0.01, (6, 3))
    got = balanced_top_k(over / over.sum(axis=1, keepdims=True), 1)
    assert np.bincount(got.top[:, 0], minlength=3).max() == 2
