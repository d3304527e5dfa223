"""`nnlab average`: the mean of checkpoints, BatchNorm statistics recomputed, an evaluated run that
predict takes like any other."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nnlab.cli.app import app
from nnlab.config import validate
from nnlab.errors import NnlabError
from nnlab.runs.run import Run
from nnlab.training import fit
from nnlab.training.average import average_run, average_state_dicts

DIGITS = {"name": "avg", "seed": 0, "data": {"kind": "digits", "image_size": 8, "batch_size": 64},
          "model": {"name": "lenet_alpha"}, "optim": {"name": "adam", "lr": 0.003},
          "train": {"epochs": 4, "keep_best": 2, "keep_last": 3, "threads": 1}}


def test_identical_checkpoints_average_to_themselves_and_two_to_their_mean():
    torch.manual_seed(0)
    a = {"w": torch.randn(3, 4), "n": torch.tensor(7)}
    b = {"w": torch.randn(3, 4), "n": torch.tensor(9)}
    same = average_state_dicts([a, a, a])
    assert torch.equal(same["w"], a["w"]) and int(same["n"]) == 7
    mean = average_state_dicts([a, b])
    assert torch.allclose(mean["w"], (a["w"] + b["w"]) / 2, rtol=0, atol=1e-7)
    assert int(mean["n"]) == 9  # integer buffers: the last one's
    with pytest.raises(NnlabError, match="different models"):
        average_state_dicts([a, {"w": torch.randn(2, 4), "n": torch.tensor(1)}])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    try:
        return fit(validate(DIGITS), out=tmp_path_factory.mktemp("runs") / "source")
    finally:
        torch.set_num_threads(threads)


def test_keep_last_keeps_the_last_epochs_weights(trained):
    names = sorted(p.name for p in trained.checkpoints.glob("epoch-e*.pt"))
    assert names == ["epoch-e002.pt", "epoch-e003.pt", "epoch-e004.pt"]


def test_averaging_one_checkpoint_reproduces_its_metrics(trained, tmp_path):
    # LeNet has no BatchNorm: the average of the best checkpoint alone is that checkpoint
    avg = average_run(trained.path, tmp_path / "best1", best=1)
    source = json.loads((trained.path / "metrics.json").read_text())
    ours = json.loads((avg.path / "metrics.json").read_text())
    assert ours["val"]["accuracy"] == source["val"]["accuracy"]
    assert ours["test"]["log_loss"] == pytest.approx(source["test"]["log_loss"], abs=1e-9)
    assert ours["averaged"]["bn_recomputed"] is False and len(ours["averaged"]["checkpoints"]) == 1


def test_average_of_the_last_epochs_is_a_run_predict_takes(trained, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["average", str(trained.path), "--last", "3", "--out", str(tmp_path / "last3")])
    assert res.exit_code == 0, res.output
    avg = Run.open(tmp_path / "last3")
    info = json.loads((avg.path / "averaged.json").read_text())
    assert info["epochs"] == [2, 3, 4]
    assert json.loads((avg.path / "metrics.json").read_text())["test"]["accuracy"] > 0.5  # chance is 0.1
    images = np.random.default_rng(0).integers(0, 255, size=(5, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", images=images)
    res = runner.invoke(app, ["predict", str(avg.path), str(tmp_path / "x.npz"), "--out", str(tmp_path / "p.csv")])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 6


def test_batchnorm_statistics_are_recomputed(tmp_path):
    cfg = validate(DIGITS | {"model": {"name": "mlp", "hidden": [32], "batchnorm": True},
                             "train": {"epochs": 2, "keep_last": 2, "threads": 1}})
    threads = torch.get_num_threads()
    try:
        source = fit(cfg, out=tmp_path / "mlp")
    finally:
        torch.set_num_threads(threads)
    avg = average_run(source.path, tmp_path / "mlp-avg", last=2)
    states = [torch.load(p, weights_only=True)["model"] for p in sorted(source.checkpoints.glob("epoch-e*.pt"))]
    ours = torch.load(avg.checkpoints / "averaged.pt", weights_only=True)["model"]
    key = next(k for k in ours if k.endswith("running_mean"))
    plain_mean = (states[0][key] + states[1][key]) / 2
    assert not torch.allclose(ours[key], plain_mean)  # re-estimated, not averaged
    weight = key.replace("running_mean", "weight")
    assert torch.allclose(ours[weight], (states[0][weight] + states[1][weight]) / 2, atol=1e-6)
    assert json.loads((avg.path / "averaged.json").read_text())["bn_recomputed"] is True


def test_asking_for_more_checkpoints_than_kept_is_a_clear_error(trained, tmp_path):
    with pytest.raises(NnlabError, match="train.keep_best >= 5"):
        average_run(trained.path, tmp_path / "x", best=5)
    with pytest.raises(NnlabError, match="exactly one"):
        average_run(trained.path, tmp_path / "y")


def test_keep_last_keeps_the_last_epochs_by_number_past_epoch_999(tmp_path):
    import torch

    from nnlab.config import validate
    from nnlab.runs.run import Run
    from nnlab.training.checkpoint import epoch_checkpoints, keep_epoch_weights

    run = Run.create(validate({"name": "k", "train": {"keep_last": 2}}), tmp_path / "run")
    run.release()
    weights = {"w": torch.zeros(1)}
    for epoch in (997, 998, 999, 1000, 1001):  # files epoch-e998.pt ... epoch-e1002.pt
        keep_epoch_weights(run, epoch, weights)
    assert [p.name for p in epoch_checkpoints(run)] == ["epoch-e1001.pt", "epoch-e1002.pt"]


def test_a_damaged_best_record_is_left_out_with_a_word_not_a_traceback(trained, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained.path, copy)
    records = sorted((copy / "checkpoints").glob("best-*.json"))
    assert records
    records[0].write_text("{not json")
    with pytest.raises(NnlabError, match="unreadable best-"):
        average_run(copy, tmp_path / "avg", best=len(records))
    from nnlab.runs.run import Run

    assert len(Run.open(copy).best_metas()) == len(records) - 1


def test_a_checkpoint_of_another_run_is_refused_by_name(trained, tmp_path):
    import shutil

    from nnlab.runs.run import RUN_ID, Run
    from nnlab.training.checkpoint import epoch_checkpoints

    copy = Run.open(shutil.copytree(trained.path, tmp_path / "copy"))
    files = epoch_checkpoints(copy)
    assert copy.id and all(torch.load(f, weights_only=True)[RUN_ID] == copy.id for f in files)
    stranger = torch.load(files[-1], weights_only=True) | {RUN_ID: "0123456789abcdef"}  # same shapes, another run
    torch.save(stranger, files[0])
    with pytest.raises(NnlabError, match=f"{files[0].name}: written by another run"):  # before: averaged silently
        average_run(copy.path, tmp_path / "avg", last=len(files))
    assert not (tmp_path / "avg").exists()
    assert average_run(copy.path, tmp_path / "avg2", last=len(files) - 1).path.is_dir()  # its own are taken
