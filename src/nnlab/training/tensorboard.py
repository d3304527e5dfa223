"""TensorBoard logging (`train.tensorboard = true`): event files under RUN/tensorboard/ with scalars per
epoch and every `train.tensorboard_every` steps, the run's plots as images, and the hyper-parameters
with the final metrics, through torch.utils.tensorboard. A disabled log does nothing, so the loops
call it unconditionally."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from nnlab.runs.run import Run
from nnlab.training.callbacks import Callback

HPARAMS = (("model", "name"), ("optim", "name"), ("optim", "lr"), ("optim", "weight_decay"), ("schedule", "name"),
           ("data", "batch_size"), ("data", "image_size"), ("train", "epochs"), ("loss", "label_smoothing"))


class TensorBoardLog(Callback):
    """Writes a run's TensorBoard events when the config asks for them (rank 0 only); a `Callback`, called by
    the loop with the others. `lr` reads the current learning rate for the per-step scalars."""

    def __init__(self, run: Run, enabled: bool | None = None, lr: Callable[[], float] | None = None) -> None:
        cfg = run.config.train
        self.enabled = cfg.tensorboard if enabled is None else enabled
        self.every = cfg.tensorboard_every
        self.writer = None
        if self.enabled:
            from torch.utils.tensorboard import SummaryWriter  # heavy (tensorboard): only when asked for

            self.writer = SummaryWriter(log_dir=str(run.path / "tensorboard"))
        self.run = run
        self.lr = lr or (lambda: float("nan"))

    @property
    def path(self) -> Path:
        return self.run.path / "tensorboard"

    def step(self, global_step: int, loss: Any, lr: float) -> None:
        """Every `every` batches: the training loss (a tensor is read only then: a GPU sync) and the lr."""
        if self.writer is not None and global_step % self.every == 0:
            self.writer.add_scalar("step/train_loss", float(loss), global_step)
            self.writer.add_scalar("step/lr", lr, global_step)

    def on_step_end(self, step: int, loss: Any) -> None:
        self.step(step, loss, self.lr())

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        self.epoch(row)

    def on_fit_end(self, run: Run, metrics: dict[str, Any]) -> None:
        self.finish(metrics)

    def epoch(self, row: dict[str, Any]) -> None:
        """Every number of the history row, as `train/...`, `val/...` and `epoch/...` scalars."""
        if self.writer is None:
            return
        epoch = int(row["epoch"])
        for key, value in row.items():
            if key == "epoch" or not isinstance(value, (int, float)):
                continue
            split, _, name = key.partition("_")
            tag = f"{split}/{name}" if split in ("train", "val") else f"epoch/{key}"
            self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()

    def finish(self, metrics: dict[str, Any]) -> None:
        """The plots as images and the hyper-parameters with the final val/test metrics; closes the writer."""
        if self.writer is None:
            return
        for png in sorted(self.run.plots.glob("*.png")):
            image = np.asarray(Image.open(png).convert("RGB"))
            self.writer.add_image(f"plots/{png.stem}", image, dataformats="HWC")
        cfg = self.run.config
        hparams = {f"{s}.{k}": getattr(getattr(cfg, s), k) for s, k in HPARAMS}
        final = {f"hparam/{split}_{k}": v for split in ("val", "test") for k, v in metrics.get(split, {}).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.writer.add_hparams(hparams, final, run_name=".")
        self.writer.close()
        self.writer = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
