"""Training speed of the stroke-sequence model on a CPU: recipes/quickdraw-rnn.toml's own size against
the CPU hint its comment gives (stroke_gru, 96 points, 2 bidirectional GRU layers of 96).

The model's training step (forward, loss, backward, AdamW) on batches of the recipe's input shape,
(batch, max_points, 5) with every point valid (simplified Quick, Draw! drawings have a median of ~53
points and rarely more than 96), timed in process CPU time with one torch thread: on a shared machine
wall time measures the neighbours, CPU time the work. The data pipeline is not included (on two cores the
model, not the loader, sets the pace of this recipe).

    python benchmarks/stroke_gru_cpu.py [--batch 128] [--steps 3] [--quick]

Ends with ``RESULT stroke_<size>_img_s <images per CPU second>`` for the recipe's size and the hint, and
``RESULT stroke_hint_epoch_seconds <s>``: an epoch of the hint (steps_per_epoch x batch_size) at that speed.
"""

from __future__ import annotations

import argparse
import time

import torch

from nnlab.config import load_config
from nnlab.models.sequence import stroke_gru, stroke_rnn

#: the CPU hint of recipes/quickdraw-rnn.toml's comment (tests/test_newcomer.py checks it validates)
HINT = ["model.name=stroke_gru", "data.max_points=96", "model.rnn_layers=2", "model.rnn_hidden=96",
        "data.batch_size=128", "train.steps_per_epoch=200"]


def images_per_second(model: torch.nn.Module, batch: int, points: int, steps: int, classes: int = 340) -> float:
    """Images per CPU second of `steps` training steps (after one untimed warm-up step)."""
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(batch, points, 5)
    x[..., 4] = 1.0  # every point valid
    y = torch.randint(0, classes, (batch,))
    start = 0.0
    for step in range(steps + 1):
        if step == 1:
            start = time.process_time()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch * steps / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny batches")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    batch, steps = (8, 1) if args.quick else (args.batch, args.steps)
    recipe = load_config("recipes/quickdraw-rnn.toml")
    hint = load_config("recipes/quickdraw-rnn.toml", HINT)
    sizes = {"recipe": (stroke_rnn, recipe), "hint": (stroke_gru, hint)}
    speed = {}
    for name, (build, cfg) in sizes.items():
        m = cfg.model
        model = build(num_classes=340, rnn_hidden=m.rnn_hidden, rnn_layers=m.rnn_layers)
        speed[name] = images_per_second(model, batch, cfg.data.max_points, steps)
        print(f"{name}: {cfg.model.name}, {cfg.data.max_points} points, {m.rnn_layers} layers of {m.rnn_hidden}: "
              f"{speed[name]:.0f} images per CPU second", flush=True)
    for name, value in speed.items():
        print(f"RESULT stroke_{name}_img_s {value:.1f}")
    epoch = hint.train.steps_per_epoch * hint.data.batch_size / speed["hint"]
    print(f"RESULT stroke_hint_epoch_seconds {epoch:.0f}")


if __name__ == "__main__":
    main()
