"""Whether this machine can train a config: checked when training starts, never when a config is
validated or a finished run is opened (a run trained on a large host still predicts and exports here)."""

from __future__ import annotations

import os

from nnlab.config import ExperimentConfig
from nnlab.errors import TrainingError

BATCH_SHARE = 4  # one batch of inputs may take at most a quarter of the memory
MLP_SHARE = 2  # an MLP's weights, gradients and two optimiser moments at most half of it


def check_resources(cfg: ExperimentConfig, memory: int | None = None) -> None:
    """Refuse, with one line naming the keys, a first batch or an MLP too large for this machine's
    memory (`memory` bytes; default the physical memory, unchecked where the OS does not say).
    A GPU for train.device = 'cuda' is checked where the device is chosen (`nnlab.device`)."""
    memory = memory_bytes() if memory is None else memory
    if memory is None:
        return
    d = cfg.data
    channels = 3 if d.modality == "drawings" else d.channels  # drawings render to up to 3 channels
    pixels = d.image_size * d.image_size * channels
    batch = max(d.batch_size, d.eval_batch_size or 0) * pixels * 4
    if batch > memory // BATCH_SHARE:
        raise TrainingError(f"data.batch_size = {d.batch_size} at data.image_size = {d.image_size}: one batch takes "
                            f"{batch / 2**30:.1f} GiB of this machine's {memory / 2**30:.1f} GiB; lower one of them "
                            "to train here")
    if cfg.model.name in ("mlp", "mlp_numpy") or cfg.engine == "numpy":
        sizes = [pixels, *cfg.model.hidden]
        params = sum(a * b for a, b in zip(sizes, sizes[1:]))
        if params * 4 * 4 > memory // MLP_SHARE:
            raise TrainingError(f"model.hidden = {cfg.model.hidden}: about {params:,} parameters, more than "
                                f"{memory / 2**30:.1f} GiB of memory can train; lower the hidden sizes")


def memory_bytes() -> int | None:
    """This machine's physical memory (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
