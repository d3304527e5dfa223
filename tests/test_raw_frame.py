"""Raw drawings are put in Google's frame the same way by training, predict, export and serve (time kept
for raw stores), on the shared raw drawings."""

from __future__ import annotations

import json

import numpy as np
import torch

from nnlab.config import load_config, validate
from nnlab.datasets.strokes import StrokeDataset, to_model_input
from nnlab.inference.kaggle.drawing_rows import read_drawing_rows
from nnlab.inference.models.doodle import Preprocessing, prepare_strokes
from nnlab.runs.run import Run
from nnlab.runs.trained import raw_handling
from nnlab.store.prepare import prepare
from nnlab.strokes.drawing import StrokeBatch
from nnlab.strokes.render import render
from nnlab.strokes.simplify import frame_batch, to_canvas
from nnlab.training import fit


def raw_file(shared_data, tmp_path, words: int = 8):
    """The first `words` raw files of the shared data as one ndjson file."""
    files = sorted((shared_data / "quickdraw" / "raw").glob("*.ndjson"))[:words]
    out = tmp_path / "raw.ndjson"
    out.write_bytes(b"".join(f.read_bytes() for f in files))
    return out


def test_training_and_predict_render_raw_drawings_alike(shared_data, tmp_path):
    src = raw_file(shared_data, tmp_path)
    store = prepare([src], tmp_path / "store", workers=1)  # raw: no --simplify
    assert store.kind == "raw" and store.has_time
    everything = np.arange(len(store))
    for encoding in ("binary", "order-velocity-time", "order-stroke-time"):
        trained = StrokeDataset(store, everything, size=64, encoding=encoding)[everything][0]
        rows = read_drawing_rows(src)
        assert len(rows.parsed) == len(store) and not rows.bad
        predicted = to_model_input(to_canvas(rows.drawings.batch(np.arange(len(store))), "frame"), 64, encoding)
        assert torch.equal(trained, predicted), encoding


def test_raw_drawings_used_to_lose_their_ink_when_taken_as_0_to_255(shared_data, tmp_path):
    store = prepare([raw_file(shared_data, tmp_path)], tmp_path / "store", workers=1)
    batch = store.batch(np.arange(len(store)))
    as_if_simplified = render(batch, 64, "binary").reshape(len(store), -1).sum(axis=1)
    framed = render(frame_batch(batch), 64, "binary").reshape(len(store), -1).sum(axis=1)
    assert ((as_if_simplified < 0.8 * framed).mean()) > 0.5  # the old training frame cut most drawings
    trained = StrokeDataset(store, np.arange(len(store)), size=64, encoding="binary")[np.arange(len(store))][0]
    assert np.allclose(trained.reshape(len(store), -1).sum(1).numpy() * 255, framed, rtol=1e-5)


def test_runs_take_raw_input_as_they_were_trained_and_serve_does_too(shared_data, tmp_path):
    store = prepare([raw_file(shared_data, tmp_path, words=3)], tmp_path / "store", workers=1)
    cfg = load_config(None, base={
        "name": "raw", "data": {"kind": "strokes", "path": str(store.path), "image_size": 32, "batch_size": 16,
                                "encoding": "order-velocity-time", "channels": 3, "val_fraction": 0.3,
                                "test_fraction": 0.0},
        "model": {"name": "lenet_alpha"}, "train": {"epochs": 1, "steps_per_epoch": 2, "threads": 1},
        "eval": {"main_metric": "map3"}})
    threads = torch.get_num_threads()
    try:
        run = fit(cfg, out=tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    assert json.loads((run.path / "metrics.json").read_text())["data"]["drawings"] == "raw"
    assert raw_handling(run) == "frame"
    prep = Preprocessing.from_config(run.config.data, raw_handling(run))
    drawing = next(iter(store.iter_drawings([0])))
    served = prepare_strokes(drawing.strokes, raw=prep.raw)
    assert all(s.shape[1] == 3 for s in served)  # time kept
    expected = frame_batch(StrokeBatch.from_drawings([drawing.strokes]))
    assert np.allclose(np.concatenate([s[:, :2] for s in served]), expected.points, atol=1e-4)
    # runs on simplified data (a simplified store, the synthetic doodles) still simplify raw input
    assert raw_handling(Run(tmp_path / "none", validate({"data": {"kind": "synth"}}))) == "simplify"
