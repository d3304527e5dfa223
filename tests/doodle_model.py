"""A tiny model trained on synthetic doodles (and its ONNX export), made once per test session
and shared by test_export, test_serve_api and test_browser (not a test module itself)."""

from __future__ import annotations

import functools
from pathlib import Path

from shared_runs import made_once, session_root

TINY_CONFIG = {
    "name": "tiny-doodles", "seed": 0,
    "data": {"kind": "synth", "classes": 12, "per_class": 40, "image_size": 32, "batch_size": 64,
             "val_fraction": 0.2, "test_fraction": 0.0},
    "model": {"name": "timm:mobilenetv3_small_050"},
    "train": {"epochs": 1, "steps_per_epoch": 3},
}


@made_once
def tiny_run() -> Path:
    """The run directory of a 1-epoch MobileNetV3 on 12 synthetic doodle classes at 32 px."""
    from nnlab.config import validate
    from nnlab.training import fit

    return fit(validate(TINY_CONFIG, "tiny-doodles"), out=session_root() / "run").path


@made_once
def tiny_export() -> Path:
    """`nnlab export` of tiny_run()."""
    from nnlab.inference.models.export import export_onnx

    return export_onnx(tiny_run(), session_root() / "export").out_dir


@functools.cache
def tiny_torch_model():
    """tiny_run()'s best checkpoint as an eval-mode torch module (do not modify it)."""
    from nnlab.runs.run import Run
    from nnlab.runs.trained import load_trained

    return load_trained(Run.open(tiny_run()))


def real_drawings(shared_data: Path, words, per_word: int) -> list[dict]:
    """The first `per_word` rows (parsed ndjson) of each word's shared simplified file."""
    import json

    rows = []
    for w in words:
        with open(shared_data / "quickdraw" / "simplified" / f"{w}.ndjson") as f:
            rows += [json.loads(line) for _, line in zip(range(per_word), f, strict=False)]
    return rows
