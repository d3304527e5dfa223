from __future__ import annotations

import inspect

import numpy as np
import pytest
import sklearn.metrics as skm

from nnlab import metrics as m
from nnlab.errors import ConfigError, DataError

C = 340  # Quick, Draw!-sized problems for the scikit-learn cross-checks


@pytest.fixture(scope="module")
def big():
    rng = np.random.default_rng(0)
    n = 20_000
    y = rng.integers(0, C, n)
    logits = rng.normal(size=(n, C)) + 4.0 * np.eye(C)[y] * rng.random((n, 1))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return y, probs


def sk_log_loss(y, p, labels):
    key = "y_proba" if "y_proba" in inspect.signature(skm.log_loss).parameters else "y_pred"
    return skm.log_loss(y, labels=labels, **{key: p})


# --------------------------------------------------------------- hand-worked examples

# Three samples, three classes:
#   row 0: order 1,2,0, truth 2 -> rank 2      row 1: order 0,2,1, truth 0 -> rank 1
#   row 2: order 2,1,0, truth 0 -> rank 3
# top1 = 1/3, top2 = 2/3, top3 = 1, MAP@3 = (1/2 + 1 + 1/3) / 3 = 0.6111...
HAND_SCORES = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]])
HAND_Y = np.array([2, 0, 0])


def test_accuracy_and_top_k_by_hand():
    assert m.accuracy([0, 1, 2, 2], [0, 2, 2, 1]) == 0.5  # 2 of 4 right
    assert m.top_k_accuracy(HAND_Y, HAND_SCORES, 1) == pytest.approx(1 / 3)
    assert m.top_k_accuracy(HAND_Y, HAND_SCORES, 2) == pytest.approx(2 / 3)
    assert m.top_k_accuracy(HAND_Y, HAND_SCORES, 3) == 1.0
    assert m.map_at_k_scores(HAND_Y, HAND_SCORES, 3) == pytest.approx((1 / 2 + 1 + 1 / 3) / 3)
    assert m.top_k(HAND_SCORES, 2).tolist() == [[1, 2], [0, 2], [2, 1]]


def test_top_k_breaks_ties_by_lower_index():
    # classes 0, 1 and 3 tie at 0.5: the stable order keeps 0, 1, 3
    assert m.top_k([[0.5, 0.5, 0.1, 0.5]], 2).tolist() == [[0, 1]]
    assert m.top_k([[0.1, 0.5, 0.5, 0.5]], 3).tolist() == [[1, 2, 3]]
    rng = np.random.default_rng(1)
    for scores in (rng.integers(0, 4, (3000, 40)), np.round(rng.random((3000, 40)), 2)):
        ref = np.argsort(-scores.astype(float), axis=1, kind="stable")[:, :5]
        np.testing.assert_array_equal(m.top_k(scores, 5), ref)
    with pytest.raises(DataError, match="NaN"):
        m.top_k([[0.1, np.nan]], 1)
    with pytest.raises(DataError, match="k must be"):
        m.top_k(HAND_SCORES, 4)


def test_map_at_k_by_id_by_hand():
    true_ids, true_labels = [10, 20, 30, 40], ["cat", "dog", "cat", "owl"]
    # shuffled rows: 30 -> cat at rank 2 (1/2); 10 -> rank 1 (1); 40 -> owl absent (0);
    # 20 -> dog at rank 3 (1/3).  MAP@3 = (1/2 + 1 + 0 + 1/3) / 4 = 0.458333...
    pred_ids = [30, 10, 40, 20]
    pred = [["dog", "cat", "owl"], ["cat", "dog", "owl"], ["cat", "dog", "bee"], ["owl", "bee", "dog"]]
    assert m.map_at_k(true_ids, true_labels, pred_ids, pred) == pytest.approx(11 / 24)
    # Only the first occurrence of a label counts (Kaggle's apk): cat at rank 3 -> 1/3.
    assert m.map_at_k([1], ["cat"], [1], [["dog", "dog", "cat"]]) == pytest.approx(1 / 3)
    # k=1 keeps only the first column: 30 -> 0, 10 -> 1, 40 -> 0, 20 -> 0
    assert m.map_at_k(true_ids, true_labels, pred_ids, pred, k=1) == pytest.approx(1 / 4)


def test_map_at_k_aligns_by_id_not_position():
    rng = np.random.default_rng(2)
    n = 5000
    ids = rng.choice(10**9, n, replace=False)
    y = rng.integers(0, 20, n)
    scores = rng.random((n, 20)) + 0.5 * np.eye(20)[y]
    topk = m.top_k(scores, 3)
    base = m.map_at_k(ids, y, ids, topk)
    assert base == pytest.approx(m.map_at_k_scores(y, scores))
    perm = rng.permutation(n)
    assert m.map_at_k(ids, y, ids[perm], topk[perm]) == pytest.approx(base)
    # the same rows shuffled without their ids are a different (wrong) pairing
    assert m.map_at_k(ids, y, ids, topk[perm]) < base - 0.1


def test_map_at_k_rejects_bad_ids():
    ids, y, pred = np.array([1, 2, 3]), np.array([0, 1, 2]), np.array([[0, 1, 2]] * 3)
    with pytest.raises(DataError, match="duplicate"):
        m.map_at_k(ids, y, np.array([1, 2, 2]), pred)
    with pytest.raises(DataError, match="duplicate"):
        m.map_at_k(np.array([1, 1, 3]), y, ids, pred)
    with pytest.raises(DataError, match=r"1 ground-truth ids have no prediction.*\[3\].*\[4\]"):
        m.map_at_k(ids, y, np.array([1, 2, 4]), pred)
    with pytest.raises(DataError, match="ids differ"):
        m.map_at_k(ids, y, ids[:2], pred[:2])
    with pytest.raises(DataError, match=r"\(N, >=3\)"):
        m.map_at_k(ids, y, ids, pred[:, :2])
    with pytest.raises(DataError, match="different types"):
        m.map_at_k(ids, y, ids, pred.astype(str))


def test_macro_f1_confusion_and_per_class_by_hand():
    y, p = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    cm = m.confusion_matrix(y, p, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # F1 = 2tp / (2tp + fp + fn): class 0 2/4, class 1 4/5, class 2 2/3 -> mean 0.65556
    expected = (0.5 + 0.8 + 2 / 3) / 3
    assert m.macro_f1(y, p) == pytest.approx(expected)
    assert m.macro_f1(y, p, num_classes=5) == pytest.approx(expected)  # absent classes ignored
    np.testing.assert_allclose(m.per_class_accuracy(cm), [0.5, 1.0, 0.5])
    assert np.isnan(m.per_class_accuracy(m.confusion_matrix(y, p, 4))[3])
    with pytest.raises(DataError, match="outside 0..2"):
        m.confusion_matrix([0, 3], [0, 1], 3)


def test_top_confusions_by_hand():
    cm = np.array([[5, 3, 0], [1, 4, 0], [6, 0, 2]])
    # off-diagonal: c->a 6 of 8 (0.75), a->b 3 of 8 (0.375), b->a 1 of 5 (0.2)
    assert m.top_confusions(cm, ["a", "b", "c"], n=2) == [("c", "a", 6, 0.75), ("a", "b", 3, 0.375)]
    assert m.top_confusions(cm, ["a", "b", "c"], n=10)[-1] == ("b", "a", 1, 0.2)  # zeros left out
    with pytest.raises(DataError, match="one name per class"):
        m.top_confusions(cm, ["a", "b"])


def test_log_loss_by_hand():
    # -(ln 0.7 + ln 0.1) / 2 = (0.356675 + 2.302585) / 2 = 1.329630
    probs = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]
    assert m.log_loss([0, 2], probs) == pytest.approx(1.329630, abs=1e-6)
    # a zero probability is clipped to eps: -ln(1e-15) = 34.538776
    assert m.log_loss([1], [[1.0, 0.0]]) == pytest.approx(34.538776, abs=1e-5)
    # unnormalised rows are renormalised: [2, 2] / 4 -> ln 2 (within the [0, 1] range check)
    assert m.log_loss([0], [[0.4, 0.4]]) == pytest.approx(np.log(2))
    with pytest.raises(DataError, match="not logits"):
        m.log_loss([0], [[3.0, -1.0]])


def test_classification_report():
    report = m.classification_report(HAND_Y, HAND_SCORES / HAND_SCORES.sum(1, keepdims=True))
    assert set(report) == {"accuracy", "top3_accuracy", "map3", "macro_f1", "log_loss"}
    assert report["accuracy"] == pytest.approx(1 / 3)
    assert report["map3"] == pytest.approx(0.6111111)
    # by id: same numbers; duplicate ids are rejected
    by_id = m.classification_report(HAND_Y, HAND_SCORES, ids=["a", "b", "c"])
    assert by_id["map3"] == pytest.approx(report["map3"])
    with pytest.raises(DataError, match="duplicate"):
        m.classification_report(HAND_Y, HAND_SCORES, ids=["a", "b", "a"])
    bad = HAND_SCORES.copy()
    bad[1, 2] = np.nan
    with pytest.raises(DataError, match="NaN or inf in 1 of 3 rows"):
        m.classification_report(HAND_Y, bad)
    bad[1, 2] = np.inf
    with pytest.raises(DataError, match="NaN or inf"):
        m.classification_report(HAND_Y, bad)
    # fewer classes than k: everything is in the top k
    two = m.classification_report([0, 1], [[0.9, 0.1], [0.6, 0.4]])
    assert two["top3_accuracy"] == 1.0 and two["accuracy"] == 0.5


def test_metric_directions():
    assert m.METRICS_HIGHER_IS_BETTER["loss"] is False
    assert m.METRICS_HIGHER_IS_BETTER["log_loss"] is False
    assert m.higher_is_better("val_map3") and m.higher_is_better("top5_accuracy")
    assert not m.higher_is_better("val_loss") and not m.higher_is_better("eer")
    report = m.classification_report(HAND_Y, HAND_SCORES)
    assert all(name in m.METRICS_HIGHER_IS_BETTER for name in report)
    with pytest.raises(ConfigError, match="unknown metric 'val_acc'"):
        m.higher_is_better("val_acc")


# ------------------------------------------------------------ scikit-learn cross-checks


def test_against_sklearn(big):
    y, probs = big
    pred = probs.argmax(axis=1)
    labels = np.arange(C)
    assert m.accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    for k in (1, 3, 5):
        assert m.top_k_accuracy(y, probs, k) == pytest.approx(
            skm.top_k_accuracy_score(y, probs, k=k, labels=labels))
    assert m.macro_f1(y, pred, C) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m.log_loss(y, probs) == pytest.approx(sk_log_loss(y, probs, labels), rel=1e-9)
    np.testing.assert_array_equal(
        m.confusion_matrix(y, pred, C), skm.confusion_matrix(y, pred, labels=labels))
    report = m.classification_report(y, probs, ids=np.arange(len(y))[::-1])
    assert report["top3_accuracy"] == pytest.approx(
        skm.top_k_accuracy_score(y, probs, k=3, labels=labels))
    assert 0.2 < report["accuracy"] < 0.9  # the fixture is neither trivial nor hopeless


def test_macro_f1_matches_sklearn_with_missing_classes():
    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 30, 500), rng.integers(5, 40, 500)  # classes 0-4 never predicted
    assert m.macro_f1(y, p, 50) == pytest.approx(skm.f1_score(y, p, average="macro"))


# ------------------------------------------------------------------- metric learning


def _unit_angles(deg):
    rad = np.deg2rad(np.asarray(deg, dtype=float))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def test_identification_rank1_fails_rank5_succeeds():
    # Gallery on the unit circle: identity 0 has four images at 0-3 deg, identities
    # 1..4 sit at 10, 20, 30, 40 deg, identity 5 at 90 deg.  A probe of identity 4 at
    # 0 deg sees identities 0,1,2,3,4 in that order: rank 5 (rank 8 if images were
    # counted instead of identities).  A probe of identity 0 at 1 deg is rank 1.
    gallery = _unit_angles([0, 1, 2, 3, 10, 20, 30, 40, 90])
    gallery_ids = np.array([0, 0, 0, 0, 1, 2, 3, 4, 5])
    probes, probe_ids = _unit_angles([0, 1]), np.array([4, 0])
    scale = np.array([[3.0], [0.2]])  # lengths must not matter (cosine)
    rates = m.identification_rates(gallery * 7.0, gallery_ids, probes * scale, probe_ids,
                                   ranks=(1, 4, 5))
    assert rates == {"rank1": 0.5, "rank4": 0.5, "rank5": 1.0}
    with pytest.raises(DataError, match="not in the gallery"):
        m.identification_rates(gallery, gallery_ids, probes, np.array([4, 9]))


def test_identification_matches_brute_force():
    rng = np.random.default_rng(4)
    gal, gal_ids = rng.normal(size=(120, 16)), rng.integers(0, 25, 120)
    probes = rng.normal(size=(300, 16))
    probe_ids = rng.choice(np.unique(gal_ids), 300)
    g = gal / np.linalg.norm(gal, axis=1, keepdims=True)
    q = probes / np.linalg.norm(probes, axis=1, keepdims=True)
    expected_rank = []
    for vec, pid in zip(q, probe_ids):
        order = np.argsort(-(g @ vec))
        seen = list(dict.fromkeys(gal_ids[order]))  # identities in order of first appearance
        expected_rank.append(seen.index(pid) + 1)
    expected_rank = np.array(expected_rank)
    rates = m.identification_rates(gal, gal_ids, probes, probe_ids, ranks=(1, 3, 10))
    for r in (1, 3, 10):
        assert rates[f"rank{r}"] == pytest.approx(np.mean(expected_rank <= r))


def test_verification_roc_matches_sklearn_on_all_pairs():
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 8, 60)
    emb = rng.normal(size=(8, 12))[ids] + 1.2 * rng.normal(size=(60, 12))
    fpr, tpr, thr = m.verification_roc(emb, ids)
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    pairs = [(i, j) for i in range(60) for j in range(i + 1, 60)]
    scores = np.array([e[i] @ e[j] for i, j in pairs])
    genuine = np.array([ids[i] == ids[j] for i, j in pairs])
    assert skm.auc(fpr, tpr) == pytest.approx(skm.roc_auc_score(genuine, scores))
    report = m.verification_report(emb, ids)
    assert report["roc_auc"] == pytest.approx(skm.roc_auc_score(genuine, scores))
    assert 0.0 < report["eer"] < 0.5
    assert set(report) == {"eer", "roc_auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001"}
    with pytest.raises(DataError, match="both same-identity and different-identity"):
        m.verification_roc(emb[:5], np.arange(5))


def test_eer_and_tpr_at_fpr():
    # separable: every genuine pair scores above every impostor pair
    ids = np.repeat(np.arange(4), 5)
    emb = np.eye(4)[ids] + 0.01 * np.random.default_rng(6).normal(size=(20, 4))
    fpr, tpr, _ = m.verification_roc(emb, ids)
    assert m.equal_error_rate(fpr, tpr) == 0.0
    assert m.tpr_at_fpr(fpr, tpr, 1e-3) == 1.0
    # hand ROC (0,0) (0.2,0.6) (1,1): FNR = FPR on the 2nd segment at 0.2 + (0.2/1.2)*0.8 = 1/3
    assert m.equal_error_rate([0, 0.2, 1], [0, 0.6, 1]) == pytest.approx(1 / 3)
    # TPR at FPR 0.01: the best point with fpr <= 0.01 is (0.005, 0.6)
    assert m.tpr_at_fpr([0, 0.005, 0.02, 1], [0, 0.6, 0.9, 1], 0.01) == 0.6


def test_threshold_at_fpr_is_a_deployable_operating_point():
    rng = np.random.default_rng(3)
    ids = np.repeat(np.arange(12), 6)
    emb = rng.normal(size=(12, 16))[ids] + 0.8 * rng.normal(size=(72, 16))
    fpr, tpr, thresholds = m.verification_roc(emb, ids)
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    i, j = np.triu_indices(len(e), k=1)
    scores, genuine = (e @ e.T)[i, j], ids[i] == ids[j]
    for target in (1e-1, 1e-2, 1e-3):
        t = m.threshold_at_fpr(fpr, tpr, thresholds, target)
        accepted = scores >= t  # counted directly from the pairs, not from the ROC
        assert accepted[~genuine].mean() <= target
        assert accepted[genuine].mean() == pytest.approx(m.tpr_at_fpr(fpr, tpr, target))
    # no point accepts anything at FPR 0 when an impostor pair outscores every genuine one
    assert m.threshold_at_fpr(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.5, 1.0]),
                                    np.array([np.inf, 0.9, 0.1]), 0.0) is None


def test_open_set_identification_rates_by_hand():
    best = ["a", "b", "a", "c", "a", "b"]
    scores = [0.9, 0.8, 0.3, 0.95, 0.7, 0.2]
    truth = ["a", "a", "a", "c", "x", "y"]
    enrolled = [True, True, True, True, False, False]
    r = m.open_set_identification(best, scores, truth, enrolled, threshold=0.5)
    assert r["rank1"] == 3 / 4  # a, a, c right; b wrong
    assert r["detection_identification_rate"] == 2 / 4  # the third is right but below 0.5
    assert r["false_reject_rate"] == 1 / 4 and r["false_accept_rate"] == 1 / 2
    assert (r["genuine"], r["impostors"]) == (4, 2)
