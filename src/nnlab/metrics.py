"""Evaluation metrics, vectorised with NumPy.

Classification: accuracy, top-k accuracy, Kaggle's MAP@k (aligned by id), macro-F1 and the
confusion matrix (scikit-learn's), log loss (with Kaggle's clipping), the confusion matrix's
summaries, and ``classification_report`` that bundles them. Metric learning: open-set identification rates (rank-r, cosine nearest
neighbour) and verification ROC over all probe pairs (TPR at a fixed FPR, EER).

Conventions: labels are integer class indices ``0..C-1``; scores and probabilities are
``(N, C)`` arrays; ties between equal scores go to the lower class index (a stable
sort on ``-scores``), so every metric is deterministic. Bad input raises
:class:`nnlab.errors.DataError` with a message saying what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from nnlab.config import METRICS_HIGHER_IS_BETTER, higher_is_better
from nnlab.errors import DataError

FPR_TARGETS = (1e-2, 1e-3)  # the verification operating points reported (and marked on the ROC plots)

__all__ = [
    "FPR_TARGETS",
    "METRICS_HIGHER_IS_BETTER",
    "accuracy",
    "classification_report",
    "evaluation_report",
    "confusion_matrix",
    "equal_error_rate",
    "higher_is_better",
    "identification_rates",
    "log_loss",
    "macro_f1",
    "map_at_k",
    "map_at_k_scores",
    "per_class_accuracy",
    "top_confusions",
    "top_k",
    "top_k_accuracy",
    "tpr_at_fpr",
    "verification_report",
    "verification_roc",
]

# --------------------------------------------------------------------------- checks


def _vector(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    return arr


def _same_length(*named: tuple[str, np.ndarray]) -> None:
    lengths = {name: len(arr) for name, arr in named}
    if len(set(lengths.values())) > 1:
        raise DataError(f"length mismatch: {lengths}")


def _same_kind(a: np.ndarray, b: np.ndarray, what: str) -> None:
    # Comparing words with class indices (or int ids with str ids) silently gives "never equal".
    def textual(x: np.ndarray) -> bool:
        return x.dtype.kind in "USO"

    if textual(a) != textual(b):
        raise DataError(f"{what} have different types ({a.dtype} vs {b.dtype}); convert one side first")


def _labels(y: Any, name: str, num_classes: int | None = None) -> np.ndarray:
    arr = _vector(y, name)
    if arr.dtype.kind not in "iub":
        raise DataError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    hi = num_classes if num_classes is not None else np.iinfo(np.int64).max
    if arr.min() < 0 or arr.max() >= hi:
        raise DataError(f"{name} has labels outside 0..{hi - 1}: min {arr.min()}, max {arr.max()}")
    return arr


def _scores(scores: Any, name: str = "scores", allow_inf: bool = True) -> np.ndarray:
    arr = np.asarray(scores)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name} must be a non-empty (N, C) array, got shape {arr.shape}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    bad = np.isnan(arr) if allow_inf else ~np.isfinite(arr)
    if bad.any():
        raise DataError(
            f"{name} contain {'NaN' if allow_inf else 'NaN or inf'} in "
            f"{int(bad.any(axis=1).sum())} of {len(arr)} rows (did training diverge?)"
        )
    return arr


def _probs(probs: Any) -> np.ndarray:
    p = _scores(probs, "probs", allow_inf=False)
    if p.min() < 0 or p.max() > 1 + 1e-6:
        raise DataError(
            f"probs must lie in [0, 1], got min {p.min():.4g}, max {p.max():.4g} "
            "(pass softmax probabilities, not logits)"
        )
    return p


# ------------------------------------------------------------------- classification


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of samples whose predicted label equals the true label."""
    t, p = _vector(y_true, "y_true"), _vector(y_pred, "y_pred")
    _same_length(("y_true", t), ("y_pred", p))
    return float(np.mean(t == p))


def top_k(scores: Any, k: int) -> np.ndarray:
    """``(N, k)`` indices of the ``k`` highest scores per row, best first.

    Equal scores keep the lower class index first, exactly as a stable argsort on
    ``-scores`` would, but via ``argpartition`` (about 2x faster at 340 classes);
    the rare rows with a tie at the k-th place are redone with the stable sort.
    """
    s = _scores(scores)
    if not 1 <= k <= s.shape[1]:
        raise DataError(f"k must be in 1..{s.shape[1]} (the number of classes), got {k}")
    if k == s.shape[1] or len(s) == 1:  # one row (a served request): the stable sort is cheapest
        return np.argsort(-s, axis=1, kind="stable")[:, :k]
    cand = np.argpartition(-s, k - 1, axis=1)[:, :k]
    cand_scores = np.take_along_axis(s, cand, axis=1)
    order = np.lexsort((cand, -cand_scores), axis=-1)  # by score desc, then index asc
    top = np.take_along_axis(cand, order, axis=1)
    # argpartition picks arbitrarily among values tied with the k-th best one
    tied = (s >= cand_scores.min(axis=1, keepdims=True)).sum(axis=1) > k
    if tied.any():
        top[tied] = np.argsort(-s[tied], axis=1, kind="stable")[:, :k]
    return top


def top_k_accuracy(y_true: Any, scores: Any, k: int) -> float:
    """Fraction of samples whose true label is among the ``k`` best-scored classes."""
    s = _scores(scores)
    y = _labels(y_true, "y_true", s.shape[1])
    _same_length(("y_true", y), ("scores", s))
    return float((top_k(s, k) == y[:, None]).any(axis=1).mean())


def _map_from_topk(y: np.ndarray, topk: np.ndarray) -> float:
    # Kaggle's MAP@k with one true label: 1/rank of its first occurrence, else 0.
    hits = topk == y[:, None]
    first = hits.argmax(axis=1)
    return float(np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0).mean())


def map_at_k_scores(y_true: Any, scores: Any, k: int = 3) -> float:
    """MAP@k for row-aligned labels and ``(N, C)`` scores (use inside training loops)."""
    s = _scores(scores)
    y = _labels(y_true, "y_true", s.shape[1])
    _same_length(("y_true", y), ("scores", s))
    return _map_from_topk(y, top_k(s, k))


def _unique_ids(ids: np.ndarray, side: str) -> None:
    values, counts = np.unique(ids, return_counts=True)
    dup = values[counts > 1]
    if dup.size:
        raise DataError(f"{side} has {dup.size} duplicate ids, e.g. {dup[:5].tolist()}")


def map_at_k(
    true_ids: Any, true_labels: Any, pred_ids: Any, pred_topk: Any, k: int = 3
) -> float:
    """Kaggle's MAP@k, with predictions matched to the ground truth by id.

    ``pred_topk`` is ``(N, >=k)`` predicted labels per id, best first (class indices or
    words, the same kind as ``true_labels``). Rows may come in any order; a score of
    1/rank of the first correct label within the top ``k`` (0 if absent) is averaged
    over ids. Duplicate ids, ids present on one side only, or fewer than ``k``
    prediction columns raise :class:`DataError`.
    """
    tid, plab = _vector(true_ids, "true_ids"), np.asarray(pred_topk)
    tlab, pid = _vector(true_labels, "true_labels"), _vector(pred_ids, "pred_ids")
    if plab.ndim != 2 or plab.shape[1] < k:
        raise DataError(f"pred_topk must be (N, >={k}) predicted labels, got shape {plab.shape}")
    _same_length(("true_ids", tid), ("true_labels", tlab))
    _same_length(("pred_ids", pid), ("pred_topk", plab))
    _same_kind(tid, pid, "true and predicted ids")
    _same_kind(tlab, plab, "true and predicted labels")
    _unique_ids(tid, "ground truth")
    _unique_ids(pid, "predictions")
    t_order, p_order = np.argsort(tid, kind="stable"), np.argsort(pid, kind="stable")
    if len(tid) != len(pid) or not np.array_equal(tid[t_order], pid[p_order]):
        missing, extra = np.setdiff1d(tid, pid), np.setdiff1d(pid, tid)
        raise DataError(
            f"ids differ: {missing.size} ground-truth ids have no prediction "
            f"(e.g. {missing[:5].tolist()}), {extra.size} predicted ids are not in the "
            f"ground truth (e.g. {extra[:5].tolist()})"
        )
    return _map_from_topk(tlab[t_order], plab[p_order, :k])


#: Metrics that are the mean of a score in [0, 1] per example (a hit, or MAP@k's 1/rank), whose standard
#: error at n examples is at most sqrt(m (1 - m) / n) (the variance of a [0, 1] score of mean m is at most
#: m (1 - m), reached by hits and misses: the binomial case).
_PER_EXAMPLE_MEAN = re.compile(r"(top\d+_)?accuracy|map\d+|rank\d+")
#: Above this standard error a split's metric is shown with it (about +-0.02 needs ~600 examples at 0.5).
UNCERTAIN_SE = 0.02


def standard_error(metric: str, value: float, n: int) -> float | None:
    """The standard error of `metric` (accuracy, top-k accuracy, MAP@k, rank-k; a val_/test_ prefix is
    ignored) measured as `value` on `n` examples, by the binomial bound sqrt(m (1 - m) / n); None for a
    metric that is not a mean of per-example scores in [0, 1] (macro-F1, log loss) or without examples."""
    base = re.sub(r"^(val|train|test)_", "", metric)
    if n <= 0 or not _PER_EXAMPLE_MEAN.fullmatch(base) or not np.isfinite(value):
        return None
    m = min(max(float(value), 0.0), 1.0)
    return float(np.sqrt(m * (1 - m) / n))


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts; rows are true classes, columns predicted ones (scikit-learn's)."""
    t = _labels(y_true, "y_true", num_classes)
    p = _labels(y_pred, "y_pred", num_classes)
    _same_length(("y_true", t), ("y_pred", p))
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix  # heavy (SciPy, ~3 s): only when counted
    return sk_confusion_matrix(t, p, labels=np.arange(num_classes)).astype(np.int64, copy=False)


def macro_f1(y_true: Any, y_pred: Any, num_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y_true`` or ``y_pred``
    (scikit-learn's ``f1_score(average="macro")``); ``num_classes`` only bounds the label range."""
    t, p = _labels(y_true, "y_true", num_classes), _labels(y_pred, "y_pred", num_classes)
    _same_length(("y_true", t), ("y_pred", p))
    from sklearn.metrics import f1_score  # heavy (SciPy): only when scored; a server never needs it
    return float(f1_score(t, p, average="macro", zero_division=0.0))


def log_loss(y_true: Any, probs: Any, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood of the true class (natural log), as Kaggle scores it.

    Probabilities are clipped to ``[eps, 1 - eps]`` and each row renormalised to sum to
    one (scikit-learn's and Kaggle's definition), so a confident mistake costs at most
    ``-log(eps)`` instead of infinity. (Current scikit-learn clips at the dtype's eps instead, which
    caps a float32 mistake at 16 rather than 34.5, so this one stays hand-written.)
    """
    p = _probs(probs).astype(np.float64)
    y = _labels(y_true, "y_true", p.shape[1])
    _same_length(("y_true", y), ("probs", p))
    p = np.clip(p, eps, 1 - eps)
    p /= p.sum(axis=1, keepdims=True)
    return float(-np.log(p[np.arange(len(y)), y]).mean())


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class from a confusion matrix; NaN for classes with no samples."""
    cm = np.asarray(cm)
    support = cm.sum(axis=1)
    out = np.full(len(cm), np.nan)
    np.divide(np.diag(cm), support, out=out, where=support > 0)
    return out


def top_confusions(
    cm: np.ndarray, classes: Sequence[str], n: int = 10
) -> list[tuple[str, str, int, float]]:
    """The ``n`` most frequent off-diagonal cells as ``(true, predicted, count, rate)``.

    ``rate`` is the share of the true class's samples that went to ``predicted``.
    Equal counts keep row-major order; zero cells are never listed.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or len(classes) != len(cm):
        raise DataError(f"need a square confusion matrix and one name per class, "
                        f"got {cm.shape} and {len(classes)} names")
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off.ravel(), kind="stable")[:n]
    support = cm.sum(axis=1)
    out = []
    for idx in flat:
        t, p = divmod(int(idx), len(cm))
        if off[t, p] > 0:
            out.append((classes[t], classes[p], int(off[t, p]), float(off[t, p] / support[t])))
    return out


def classification_report(
    y_true: Any, probs: Any, ids: Any = None, k: int = 3
) -> dict[str, float]:
    """``accuracy``, ``top{k}_accuracy``, ``map{k}``, ``macro_f1`` and ``log_loss``.

    With ``ids``, MAP@k goes through :func:`map_at_k` keyed by id (which rejects
    duplicate ids). With fewer than ``k`` classes, every class counts as top-k.
    """
    p = _probs(probs)
    y = _labels(y_true, "y_true", p.shape[1])
    _same_length(("y_true", y), ("probs", p))
    kk = min(k, p.shape[1])
    topk = top_k(p, kk)
    if ids is None:
        map_k = _map_from_topk(y, topk)
    else:
        ids = _vector(ids, "ids")
        map_k = map_at_k(ids, y, ids, topk, kk)
    return {
        "accuracy": float(np.mean(topk[:, 0] == y)),
        f"top{k}_accuracy": float((topk == y[:, None]).any(axis=1).mean()),
        f"map{k}": map_k,
        "macro_f1": macro_f1(y, topk[:, 0], p.shape[1]),
        "log_loss": log_loss(y, p),
    }


def evaluation_report(y_true: Any, probs: Any, ids: Any = None, k: int = 3) -> dict[str, float]:
    """:func:`classification_report` plus ``loss``: the log loss again, under the name the training
    loss has (history's ``val_loss``, ``eval.main_metric = "loss"``); both engines score a split with it."""
    report = classification_report(y_true, probs, ids=ids, k=k)
    return report | {"loss": report["log_loss"]}


# ------------------------------------------------------------------ metric learning


def _unit(emb: Any, name: str) -> np.ndarray:
    e = np.asarray(emb)
    if e.ndim != 2 or len(e) == 0:
        raise DataError(f"{name} must be a non-empty (N, D) array, got shape {e.shape}")
    if e.dtype.kind != "f":
        e = e.astype(np.float64)
    if not np.isfinite(e).all():
        raise DataError(f"{name} contain NaN or inf")
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def identification_rates(
    gallery_emb: Any,
    gallery_ids: Any,
    probe_emb: Any,
    probe_ids: Any,
    ranks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Open-set identification rate at each rank, as ``{"rank1": ..., "rank5": ...}``.

    Each probe is matched by cosine similarity of L2-normalised embeddings. Gallery
    identities are ranked by their best-matching image (so rank counts distinct
    identities, not images; equal similarities favour the smaller id); a probe counts
    at rank r when its identity is among the r best. Every probe identity must be in
    the gallery.
    """
    g, p = _unit(gallery_emb, "gallery_emb"), _unit(probe_emb, "probe_emb")
    gid, pid = _vector(gallery_ids, "gallery_ids"), _vector(probe_ids, "probe_ids")
    _same_length(("gallery_emb", g), ("gallery_ids", gid))
    _same_length(("probe_emb", p), ("probe_ids", pid))
    _same_kind(gid, pid, "gallery and probe ids")
    if g.shape[1] != p.shape[1]:
        raise DataError(f"embedding sizes differ: gallery {g.shape[1]}, probes {p.shape[1]}")
    if any(int(r) < 1 for r in ranks):
        raise DataError(f"ranks must be >= 1, got {list(ranks)}")
    uids, g_cls, counts = np.unique(gid, return_inverse=True, return_counts=True)
    target = np.minimum(np.searchsorted(uids, pid), len(uids) - 1)
    unknown = uids[target] != pid
    if unknown.any():
        raise DataError(f"{np.unique(pid[unknown]).size} probe identities are not in the gallery, "
                        f"e.g. {np.unique(pid[unknown])[:5].tolist()}")
    g = g[np.argsort(g_cls, kind="stable")]  # gallery grouped by identity for reduceat
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(p), dtype=np.int64)
    chunk = max(1, 4_000_000 // len(g))  # bounds the (chunk, G) similarity block
    cls = np.arange(len(uids))
    for lo in range(0, len(p), chunk):
        best = np.maximum.reduceat(p[lo:lo + chunk] @ g.T, starts, axis=1)  # (c, identities)
        t = target[lo:lo + chunk]
        own = best[np.arange(len(t)), t][:, None]
        ahead = (best > own) | ((best == own) & (cls < t[:, None]))
        rank[lo:lo + chunk] = ahead.sum(axis=1) + 1
    return {f"rank{int(r)}": float((rank <= r).mean()) for r in ranks}


def verification_roc(emb: Any, ids: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC over all unordered pairs: cosine similarity scores, genuine = same id.

    Returns ``(fpr, tpr, thresholds)`` from :func:`sklearn.metrics.roc_curve`. Uses
    O(N^2) memory (fine for a few thousand embeddings).
    """
    e, y = _unit(emb, "emb"), _vector(ids, "ids")
    _same_length(("emb", e), ("ids", y))
    i, j = np.triu_indices(len(e), k=1)
    scores = (e @ e.T)[i, j]
    genuine = y[i] == y[j]
    if genuine.all() or not genuine.any():
        raise DataError(f"verification needs both same-identity and different-identity pairs; "
                        f"got {int(genuine.sum())} genuine of {len(genuine)} pairs")
    from sklearn.metrics import roc_curve  # heavy (SciPy): only when a ROC is drawn
    fpr, tpr, thresholds = roc_curve(genuine, scores)
    return fpr, tpr, thresholds


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The best TPR reachable by some threshold whose FPR is at most ``target``.

    Not interpolated: only ROC points are thresholds one can actually deploy.
    """
    fpr, tpr = np.asarray(fpr), np.asarray(tpr)
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


def threshold_at_fpr(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray, target: float) -> float | None:
    """The similarity threshold of the ROC point :func:`tpr_at_fpr` picks (accept when
    ``score >= threshold``), or None when no point with FPR <= ``target`` accepts anything."""
    fpr, tpr, thresholds = np.asarray(fpr), np.asarray(tpr), np.asarray(thresholds)
    ok = np.flatnonzero((fpr <= target) & np.isfinite(thresholds))
    if not len(ok) or tpr[ok].max() <= 0:
        return None
    return float(thresholds[ok[np.argmax(tpr[ok])]])


def open_set_identification(best: Any, best_scores: Any, truth: Any, enrolled: Any,
                            threshold: float) -> dict[str, float]:
    """Rates of a gallery search at a threshold: each query's best identity and its similarity,
    its true identity, and whether that identity is enrolled.

    ``rank1``: enrolled queries whose best identity is theirs (threshold ignored);
    ``detection_identification_rate``: enrolled queries identified correctly and accepted;
    ``false_reject_rate``: enrolled queries rejected (best similarity below the threshold);
    ``false_accept_rate``: queries of people not enrolled that are accepted as someone.
    """
    best, truth = _vector(best, "best"), _vector(truth, "truth")
    scores, enrolled = np.asarray(best_scores, dtype=np.float64), np.asarray(enrolled, dtype=bool)
    _same_length(("best", best), ("best_scores", scores), ("truth", truth), ("enrolled", enrolled))
    accepted = scores >= threshold
    genuine, impostor = enrolled, ~enrolled
    rate = lambda hits, among: float(hits[among].mean()) if among.any() else float("nan")
    correct = best == truth
    return {"rank1": rate(correct, genuine), "detection_identification_rate": rate(correct & accepted, genuine),
            "false_reject_rate": rate(~accepted, genuine), "false_accept_rate": rate(accepted, impostor),
            "threshold": float(threshold), "genuine": int(genuine.sum()), "impostors": int(impostor.sum())}


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The rate where FPR equals FNR (= 1 - TPR), linearly interpolated on the ROC."""
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    gap = (1 - tpr) - fpr  # decreases from >= 0 at fpr=0 to <= 0 at fpr=1
    i = int(np.argmax(gap <= 0))
    if i == 0 or gap[i] == 0:
        return float(fpr[i])
    w = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def verification_report(
    emb: Any, ids: Any, fpr_targets: Sequence[float] = FPR_TARGETS
) -> dict[str, float]:
    """``eer``, ``roc_auc`` and ``tpr_at_fpr_<target>`` for each target over all pairs."""
    fpr, tpr, _ = verification_roc(emb, ids)
    return verification_summary(fpr, tpr, fpr_targets)


def verification_summary(fpr: np.ndarray, tpr: np.ndarray,
                         fpr_targets: Sequence[float] = FPR_TARGETS) -> dict[str, float]:
    """``eer``, ``roc_auc`` and ``tpr_at_fpr_<target>`` of a verification ROC."""
    from sklearn.metrics import auc  # heavy (SciPy): with the ROC
    out = {"eer": equal_error_rate(fpr, tpr), "roc_auc": float(auc(fpr, tpr))}
    out.update({f"tpr_at_fpr_{t:g}": tpr_at_fpr(fpr, tpr, t) for t in fpr_targets})
    return out
