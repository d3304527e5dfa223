"""Identity-level (open-set) splits for face and person recognition.

Face recognition is judged on people the model never saw. With ``data.split = "identity"``:

- ``train``: the training identities' training images;
- ``val``: held-out images of the training identities (closed-set accuracy), a
  ``val_fraction`` of each identity's images chosen per identity;
- ``test``: every image of the unseen identities (``data.open_set_identities`` of them,
  default a ``test_fraction`` of all), for gallery/probe identification and verification.

No identity is in both train/val and test. The split depends only on the labels and the
seed; ``nnlab.datasets.splits.image_splits`` writes it once to the run's ``splits.json`` and reuses
it on eval and resume. (A closed-set split at the image level, where every identity
appears in every split, is ``data.split = "stratified"``.)

The classifier only covers the training identities: ``open_set_source`` relabels the
source so that they come first (labels 0..K-1, the run's ``classes.txt``) and the unseen
identities after them.
"""

from __future__ import annotations

import numpy as np

from nnlab.config import ExperimentConfig
from nnlab.errors import ConfigError, DataError
from nnlab.ingest.images import ImageSource


def holdout_per_identity(labels: np.ndarray, index: np.ndarray, fraction: float,
                         seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split `index` at the image level: of each identity's n images, round(n * fraction)
    chosen by the seed are held out, always keeping at least one to train on.

    Returns ``(kept, held_out)``, both sorted.
    """
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for identity in np.unique(labels[index]):
        own = index[labels[index] == identity]
        n_out = min(len(own) - 1, int(np.floor(len(own) * fraction + 0.5)))
        perm = rng.permutation(own)
        held.append(perm[:n_out])
        kept.append(perm[n_out:])
    cat = lambda parts: np.sort(np.concatenate(parts)) if parts else index[:0]  # noqa: E731
    return cat(kept), cat(held)


def identity_split(labels: np.ndarray, cfg: ExperimentConfig, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Train/val/test indices with disjoint identities between train/val and test (see the module docstring).

    An unseen identity needs at least ``eval.gallery_per_id + 1`` images (a gallery image
    and a probe). Identities with fewer images are an error naming them, or, with
    ``data.on_bad = "skip"``, are left out of every split (``open_set_source`` counts them).
    """
    labels = np.asarray(labels, dtype=np.int64)
    d, seed = cfg.data, cfg.seed
    need = cfg.eval.gallery_per_id + 1
    present, counts = np.unique(labels, return_counts=True)
    if len(present) == 0:
        raise DataError("identity split: the data set holds no images")
    few = present[counts < need]
    if len(few):
        if getattr(d, "on_bad", "error") == "error":  # only the folder kind can skip bad images
            shown = ", ".join(repr(names[i]) if names else str(i) for i in few[:5])
            raise DataError(f"identity split: {len(few)} identities have fewer than {need} images (one gallery "
                            f"image per eval.gallery_per_id = {cfg.eval.gallery_per_id}, plus one probe), e.g. "
                            f"{shown}; add images, or set data.on_bad = \"skip\" to leave them out")
        present = present[counts >= need]
    n_ids = len(present)
    n_unseen = d.open_set_identities if d.open_set_identities is not None else int(round(d.test_fraction * n_ids))
    if n_unseen < 1:
        raise ConfigError(f"identity split: no unseen identities (data.test_fraction = {d.test_fraction} of "
                          f"{n_ids}); set data.open_set_identities")
    if n_unseen > n_ids - 2:
        raise ConfigError(f"data.open_set_identities = {n_unseen} leaves fewer than 2 training identities "
                          f"(the data has {n_ids} usable identities)")
    rng = np.random.default_rng(seed)
    unseen = np.sort(rng.permutation(present)[:n_unseen])
    known = np.setdiff1d(present, unseen)
    index = np.arange(len(labels))
    train_pool = index[np.isin(labels, known)]
    train, val = holdout_per_identity(labels, train_pool, d.val_fraction, seed + 1)
    return {"train": train, "val": val, "test": index[np.isin(labels, unseen)]}


def open_set_source(source: ImageSource, splits: dict[str, np.ndarray]) -> tuple[ImageSource, int, list[str]]:
    """The source relabelled for an identity split: training identities first, then unseen ones.

    Returns ``(source, k, unseen)``: classes ``0..k-1`` are the training identities (the
    classifier's classes, in their original order), ``unseen`` the names of the test
    identities. Identities in no split (too few images, skipped) come last and are
    counted in ``source.skipped["too_few_images"]``.
    """
    labels = source.labels
    known = np.unique(labels[splits["train"]])
    unseen = np.unique(labels[splits["test"]])
    leaked = np.intersect1d(np.union1d(known, labels[splits["val"]]), unseen)
    if len(leaked) or not np.isin(labels[splits["val"]], known).all():
        raise DataError(f"identity split: identities {[source.classes[i] for i in leaked[:5]]} are in both "
                        "training and open-set test (or val holds identities with no training images); "
                        "was splits.json edited?")
    rest = np.setdiff1d(np.arange(len(source.classes)), np.union1d(known, unseen))
    order = np.concatenate([known, unseen, rest])
    new_label = np.empty(len(order), dtype=np.int64)
    new_label[order] = np.arange(len(order))
    skipped = dict(source.skipped)
    dropped = int(np.isin(rest, labels).sum())  # identities with images but in no split
    if dropped:
        skipped["too_few_images"] = dropped
    relabelled = ImageSource(classes=[source.classes[i] for i in order], labels=new_label[labels],
                             images=source.images, files=source.files, test_mask=source.test_mask, skipped=skipped)
    return relabelled, len(known), [source.classes[i] for i in unseen]
