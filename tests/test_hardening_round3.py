"""The last items of the second hardening round: what a kill right after a checkpoint or right after
metrics.json leaves (the epoch's train.log line and TensorBoard scalars, the plots), one range rule for
drawings read from files and drawings given to the Python API or the server, and checkpoints that say
which run wrote them (`nnlab average` refuses another run's)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from doodle_model import tiny_export, tiny_run
from fastapi.testclient import TestClient

import nnlab
import nnlab.evaluation.results
import nnlab.fileio
import nnlab.runs.run
import nnlab.training.checkpoint
from nnlab.config import validate
from nnlab.errors import DataError
from nnlab.ingest.chunks import read_drawings
from nnlab.ingest.reasons import REASONS
from nnlab.inference.models.doodle import prepare_strokes
from nnlab.runs.run import Run
from nnlab.training import fit

TINY = {"name": "order", "seed": 0,
        "data": {"kind": "synth", "classes": 3, "per_class": 8, "image_size": 16, "val_fraction": 0.34,
                 "test_fraction": 0.0, "batch_size": 8, "num_workers": 0},
        "model": {"name": "lenet_alpha"},
        "train": {"epochs": 2, "steps_per_epoch": 2, "threads": 1, "tensorboard": True, "tensorboard_every": 1}}
MOMENTS = ("checkpoint-saved:1", "plots-written:1", "metrics-written:1")


def _scalars(folder) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # heavy: only here

    steps: dict[str, list[int]] = {}
    for events in sorted(folder.glob("events.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            steps.setdefault(tag, []).extend(e.step for e in acc.Scalars(tag))
    return steps


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory) -> dict[str, Run]:
    """One tiny run with TensorBoard and plots on, its directory copied at each of MOMENTS (what a kill -9
    there would leave), and the finished run itself under "end"."""
    root = tmp_path_factory.mktemp("order")
    out, copies, counts = root / "run", {}, {}

    def snapshot(name: str) -> None:
        counts[name] = counts.get(name, 0) + 1
        if f"{name}:{counts[name]}" in MOMENTS:
            copies[f"{name}:{counts[name]}"] = shutil.copytree(out, root / f"{name}-{counts[name]}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NNLAB_PLOTS", "1")
        for module in (nnlab.fileio, nnlab.runs.run, nnlab.training.checkpoint, nnlab.evaluation.results):
            mp.setattr(module, "kill_point", snapshot)
        run = fit(validate(TINY), out=out, echo=False)
    assert sorted(copies) == sorted(MOMENTS)
    return {k: Run.open(v) for k, v in copies.items()} | {"end": run}


def test_a_kill_right_after_a_checkpoint_keeps_that_epochs_log_line_and_scalars(snapshots, tmp_path, monkeypatch):
    # epoch 1's last.pt is written: resume starts at epoch 2
    killed = Run.open(shutil.copytree(snapshots["checkpoint-saved:1"].path, tmp_path / "run"))
    assert [line.split()[1] for line in (killed.path / "train.log").read_text().splitlines()
            if line.startswith("epoch ")] == ["1/2"]
    assert _scalars(killed.path / "tensorboard")["train/loss"] == [1]  # before: both lost
    monkeypatch.setenv("NNLAB_PLOTS", "0")
    resumed = fit(killed.config, resume_run=killed, echo=False)
    assert [line.split()[1] for line in (resumed.path / "train.log").read_text().splitlines()
            if line.startswith("epoch ")] == ["1/2", "2/2"]  # notes (a small val split's uncertainty) aside
    assert sorted(_scalars(resumed.path / "tensorboard")["train/loss"]) == [1, 2]


def test_a_finished_run_has_its_plots_at_every_moment(snapshots):
    # metrics.json marks a run finished (resume leaves it alone), so the plots are on disk before it
    for name, run in snapshots.items():
        if (run.path / "metrics.json").exists():
            assert {"history.png", "confusion.png"} <= {p.name for p in run.plots.iterdir()}, name
    assert not (snapshots["plots-written:1"].path / "metrics.json").exists()


def test_drawings_of_the_api_follow_the_readers_range_rule(tmp_path):
    """A negative time (or a coordinate past the raw limit) is refused alike by the file readers,
    prepare_strokes (the Python API) and the server, in the readers' words."""
    bad = {"negative time": [[[0, 10, 20], [0, 10, 5], [-5, 10, 20]]],
           "huge coordinate": [[[0, 2e6], [0, 1], [0, 10]]],
           "time past the limit": [[[0, 10], [0, 10], [0, 2.0 ** 25]]]}
    from nnlab.serve.app import create_app

    client, run = TestClient(create_app(tiny_export())), nnlab.load_run(tiny_run())
    for what, drawing in bad.items():
        file = tmp_path / "bad.ndjson"
        file.write_text(f'{{"word": "cat", "key_id": "1", "drawing": {drawing}}}\n')
        with pytest.raises(DataError, match="outside the format's range"):
            list(read_drawings(file, on_bad="error"))
        with pytest.raises(DataError, match="outside the format's range") as exc:
            prepare_strokes([np.asarray(s, dtype=float).T for s in drawing])  # before: accepted
        assert REASONS["out_of_range"] in str(exc.value), what
        answer = client.post("/api/predict", json={"drawing": drawing})
        assert answer.status_code == 422 and REASONS["out_of_range"] in answer.text, (what, answer.text)
        with pytest.raises(DataError, match="outside the format's range"):  # before: TrainedRun.predict took it
            run.predict([[np.asarray(s, dtype=float).T for s in drawing]])
    ok = [[[0, 10, 20], [0, 10, 5], [0, 10, 20]]]
    assert client.post("/api/predict", json={"drawing": ok}).status_code == 200
    assert len(run.predict([[np.asarray(s, dtype=float).T for s in ok]]).labels) == 1
