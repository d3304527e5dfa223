"""What a newcomer ran into (issue 28): resume after early stopping, Google's strokes in `run.predict`, a
CSV quote left open, `nnlab runs` of keep_best = 0, eval's default split, the first batch's data wait,
SIGTERM, --set of an option a kind lacks, a study whose data fails, .gitignore, faces help, averaged runs."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess

import numpy as np
import pytest
from cli_runner import run_cli as nnlab
from conftest import ROOT

import nnlab as api
from nnlab.config import load_config, validate
from nnlab.errors import ConfigError, DataError, NnlabError
from nnlab.runs.run import Run

# a LeNet on 16 px digits with two steps an epoch: an epoch is a fraction of a second
TINY = {"name": "newcomer", "seed": 0,
        "data": {"kind": "digits", "image_size": 16, "batch_size": 32, "test_fraction": 0.0},
        "model": {"name": "lenet_alpha"}, "optim": {"name": "adam", "lr": 0.003},
        "train": {"epochs": 2, "steps_per_epoch": 2, "keep_best": 0, "keep_last": 2, "threads": 1}}


def tiny(**train) -> dict:
    return json.loads(json.dumps(TINY)) | {"train": TINY["train"] | train}


@pytest.fixture(scope="module")
def no_test_run(tmp_path_factory):
    """keep_best = 0 (scored at its last epoch, as the faces recipe) and no test split."""
    return api.fit(validate(tiny()), out=tmp_path_factory.mktemp("newcomer") / "run", echo=False).path


# ----------------------------------------------------------------------------- 2: resume after early stopping


def test_extending_an_early_stopped_run_counts_patience_afresh_and_says_why_it_stopped(tmp_path, capsys):
    # lr ~ 0: the metric never improves, so patience 2 stops 6 planned epochs after epoch 3
    cfg = validate(tiny(epochs=6, early_stop_patience=2, keep_best=1) | {"optim": {"name": "sgd", "lr": 1e-12}})
    run = api.fit(cfg, out=tmp_path / "run")
    out = capsys.readouterr().out
    assert len(run.history) == 3 and run.metrics["stopped_early"]
    assert "stopped early after epoch 3 of 6: val_accuracy did not improve for 2 epochs" in out
    assert f"`nnlab resume {run.path} --epochs N` trains more" in out
    assert "stopped early after epoch 3" in (run.path / "train.log").read_text()

    api.resume(run.path)  # nothing to resume: the line says early stopping ended it, and what to do
    out = capsys.readouterr().out
    assert "early stopping ended it after 3 epochs of 6" in out and "--epochs N" in out and "afresh" in out

    api.resume(run.path, epochs=8)  # the patience carried over would stop it after one epoch
    assert len(api.load_run(run.path).history) == 5
    assert "stopped early after epoch 5 of 8" in capsys.readouterr().out

    api.resume(run.path, epochs=8)  # its own plan again: trains the epochs early stopping skipped
    assert len(api.load_run(run.path).history) == 7


def test_early_stopping_works_with_keep_best_0(tmp_path):
    # keep_best = 0 keeps no best checkpoint, but the best value so far is still what patience counts from
    cfg = validate(tiny(epochs=5, early_stop_patience=2, keep_best=0) | {"optim": {"name": "sgd", "lr": 1e-12}})
    run = api.fit(cfg, out=tmp_path / "run", echo=False)
    assert len(run.history) == 3 and run.metrics["stopped_early"]


# ----------------------------------------------------------------------------- 3: Google's strokes in run.predict


def test_run_predict_takes_googles_strokes_as_the_server_does():
    from doodle_model import tiny_run

    run = api.load_run(tiny_run())
    google = [[[10, 60, 120, 200], [20, 90, 40, 200]], [[5, 250], [250, 5]]]  # [[x...], [y...]] per stroke
    arrays = [np.array(s, dtype=np.float64).T for s in google]
    by_lists, by_arrays = run.predict([google]), run.predict([arrays])
    assert np.array_equal(by_lists.probs, by_arrays.probs)
    raw = [[[s * 3.7 for s in st[0]], [s * 2.1 for s in st[1]], list(range(0, 40 * len(st[0]), 40))] for st in google]
    assert run.predict([raw, raw]).probs.shape == (2, len(run.classes))  # raw: simplified as served
    with pytest.raises(NnlabError, match="mixed; predict each kind in a call of its own"):
        run.predict([google, raw])
    for bad, words in [([[[1, 2, 3], [4, 5]]], "drawing 0, stroke 0: x, y have different lengths (3, 2)"),
                       ([[[1, 2]]], "drawing 0, stroke 0: a stroke is [[x...], [y...]]"),
                       ([[[], []]], "drawing 0, stroke 0: a stroke has no points"),
                       ("not a drawing", "drawing 0: expected a list of strokes")]:
        with pytest.raises(NnlabError) as info:
            run.predict([google, bad] if bad != "not a drawing" else [bad])
        message = str(info.value)
        assert "\n" not in message and words.replace("drawing 0", "drawing 1" if bad != "not a drawing"
                                                     else "drawing 0") in message, message


# ----------------------------------------------------------------------------- 6: a CSV quote left open


def test_an_unclosed_quote_loses_no_key_id_from_the_submission(tmp_path, shared_data, cli):
    from doodle_model import real_drawings, tiny_run

    rows = real_drawings(shared_data, ["cat", "dog"], 3)
    lines = ["key_id,countrycode,drawing"]
    for i, r in enumerate(rows):
        drawing = json.dumps(r["drawing"]).replace('"', '""')
        lines.append(f'{r["key_id"]},US,"{drawing[:-1] if i == 2 else drawing + chr(34)}')  # row 3: no closing quote
    path = tmp_path / "test.csv"
    path.write_text("\n".join(lines) + "\n")
    keys = [str(r["key_id"]) for r in rows]
    assert len(list(csv.reader(path.open()))) - 1 == 5  # Python's csv module: row 4 vanishes into row 3

    proc = cli("predict", tiny_run(), path, "--out", tmp_path / "sub.csv")
    written = [r["key_id"] for r in csv.DictReader((tmp_path / "sub.csv").open())]
    assert written == keys and "wrote 6 rows" in proc.stdout  # every key_id, in order
    assert f"a quote opened on line 4 is not closed on its line and takes in 1 row of its own: key_id {keys[3]} " \
           "(line 5)" in proc.stderr
    strict = cli("predict", tiny_run(), path, "--out", tmp_path / "strict.csv", "--strict", ok=False)
    assert strict.returncode == 2 and "line 4" in strict.stderr and not (tmp_path / "strict.csv").exists()


# ----------------------------------------------------------------------------- 7, 8: runs and eval


def test_runs_lists_the_metric_of_a_keep_best_0_run(no_test_run, cli):
    from nnlab.runs.listing import run_status

    metrics = json.loads((no_test_run / "metrics.json").read_text())
    status = run_status(no_test_run)
    assert status.value == metrics["val"]["accuracy"]
    assert f"accuracy {metrics['val']['accuracy']:.4f}" in cli("runs", no_test_run.parent).stdout


def test_eval_defaults_to_val_when_the_run_has_no_test_split_and_says_so(no_test_run, cli):
    proc = cli("eval", no_test_run)
    assert re.search(r"^split\s+val$", proc.stdout, re.M) and "no test split; evaluating val" in proc.stderr
    metrics = json.loads((no_test_run / "metrics.json").read_text())
    assert f"{metrics['val']['accuracy']:.4f}" in proc.stdout
    assert api.load_run(no_test_run).evaluate()["split"] == "val"
    asked = cli("eval", no_test_run, "--split", "test", ok=False)
    assert asked.returncode == 2 and "split 'test' is empty or unknown (have: train, val)" in asked.stderr


# ----------------------------------------------------------------------------- 9: the first batch's data wait


def test_the_first_batchs_wait_is_warm_up_and_a_study_says_the_note_once():
    from nnlab.training.throughput import DATA_WAIT_HINT, data_wait_hint, say_once, steady_wait_fraction

    cfg = validate({"data": {"kind": "digits"}})
    # epoch 1 of the demo: 71% waiting, nearly all of it the first batch (the workers starting)
    warm = {"seconds": 10.0, "data_wait_fraction": 0.71, "first_batch_seconds": 6.6}
    assert steady_wait_fraction(warm) == pytest.approx(0.5 / 3.4) and data_wait_hint(cfg, 0, warm) is None
    slow = {"seconds": 10.0, "data_wait_fraction": 0.5, "first_batch_seconds": 0.1}
    assert steady_wait_fraction(slow) > DATA_WAIT_HINT and "epoch 1 waited for data 49%" in data_wait_hint(cfg, 0, slow)
    assert steady_wait_fraction({"seconds": 1.0, "data_wait_fraction": 1.0, "first_batch_seconds": 1.0}) == 0.0
    with say_once():  # a study's cells: said by the first, not again
        assert data_wait_hint(cfg, 0, slow) and data_wait_hint(cfg, 0, slow) is None
    assert data_wait_hint(cfg, 0, slow)  # outside a study each run says it (once per run, by the loop)


# ----------------------------------------------------------------------------- 12: SIGTERM


def test_sigterm_during_a_run_says_how_to_resume_and_exits_143(tmp_path, monkeypatch):
    import nnlab.api as api_module

    def terminated(cfg, out=None, announce=None, **_kw):
        run = Run.create(cfg, out)
        announce(run)
        os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends before it kills
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(api_module, "train", terminated)
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "t"\n[data]\nkind = "digits"\n')
    before = signal.getsignal(signal.SIGTERM)
    proc = nnlab("run", recipe, "--out", tmp_path / "run", ok=False)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip() == f"terminated (SIGTERM); resume with nnlab resume {(tmp_path / 'run').resolve()}"
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the command's only


# ----------------------------------------------------------------------------- 13: an option the kind lacks


def test_set_data_path_for_digits_is_refused(no_test_run, cli, tmp_path):
    with pytest.raises(ConfigError, match="data.path: not an option of kind 'digits'"):
        load_config(ROOT / "recipes" / "digits-lenet.toml", ["data.path=/nonexistent"])
    proc = cli("eval", no_test_run, "--data", tmp_path, ok=False)
    assert proc.returncode == 2 and "data.path: not an option of kind 'digits'" in proc.stderr


# ----------------------------------------------------------------------------- 14: a study whose data fails


def test_a_failed_download_leaves_no_study_folders(tmp_path, monkeypatch):
    import nnlab.studies.execute as execute

    def offline(path, dataset="mnist"):
        raise DataError("could not download MNIST (offline?)")

    monkeypatch.setattr(execute, "download_idx", offline)
    cfg = validate({"name": "ablation", "data": {"kind": "idx", "path": str(tmp_path / "mnist"), "download": True}})
    with pytest.raises(DataError, match="could not download"):
        api.study(cfg, grid=["a=train.epochs=1", "b=train.epochs=2"], seeds=1, out=tmp_path / "study")
    assert not (tmp_path / "study").exists()


# ----------------------------------------------------------------------------- 15: .gitignore


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs git and a checkout")
def test_the_readmes_output_folders_are_ignored_by_git():
    text = (ROOT / "README.md").read_text() + "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    outputs = {m for m in re.findall(r"--out ([\w./-]+)", text) if not m.startswith("/") and m not in ("DIR", "FILE")}
    assert {"gallery/", "submission.csv", "matches.csv", "runs/faces"} <= outputs
    for path in sorted(outputs):
        probe = path.rstrip("/") + ("/x" if path.endswith("/") or "." not in path.rsplit("/", 1)[-1] else "")
        assert subprocess.run(["git", "check-ignore", "-q", "--no-index", probe], cwd=ROOT).returncode == 0, path


# ----------------------------------------------------------------------------- 16: faces help


@pytest.mark.parametrize("command", [["embed"], ["identify"], ["gallery", "build"], ["gallery", "add"], ["gallery"]])
def test_faces_help_has_plain_placeholders_and_an_example(command, cli):
    text = cli(*command, "--help").stdout
    assert "Example: nnlab " + " ".join(command) in text
    assert "<" not in text and "{" not in text, text  # no <list[Path]>, <path> or {MODEL}
    usage = text.splitlines()[0]
    if command[0] in ("embed", "identify"):
        assert usage.endswith("MODEL GALLERY INPUT..." if command == ["identify"] else "MODEL INPUT..."), usage


# ----------------------------------------------------------------------------- 19: an averaged run's time


def test_an_averaged_run_reports_its_own_time_and_what_it_averaged(no_test_run, tmp_path, cli):
    proc = cli("average", no_test_run, "--last", "2", "--out", tmp_path / "avg")
    metrics = json.loads((tmp_path / "avg" / "metrics.json").read_text())
    source = json.loads((no_test_run / "metrics.json").read_text())
    assert metrics["train_seconds"] == metrics["averaged"]["seconds"] != source["train_seconds"]
    assert metrics["images_per_second"] is None
    assert f"averaged   2 checkpoints (epochs 1, 2) of {no_test_run} in " in proc.stdout
    assert "trained " not in proc.stdout


# ----------------------------------------------------------------------------- 5: a val split too small


def test_a_small_val_splits_metric_is_shown_with_its_standard_error(no_test_run, capsys):
    from nnlab.metrics import standard_error
    from nnlab.training.epochs import EpochLog

    # the binomial bound, checked against the spread of per-example hits of mean m
    hits = np.r_[np.ones(7), np.zeros(56)]
    assert standard_error("val_map3", hits.mean(), len(hits)) == pytest.approx(hits.std() / np.sqrt(len(hits)))
    assert standard_error("val_map3", 0.1111, 21) == pytest.approx(0.0686, abs=1e-4)
    assert standard_error("macro_f1", 0.5, 21) is None and standard_error("accuracy", 0.5, 0) is None

    row = {"epoch": 1, "train_loss": 2.0, "val_accuracy": 0.1111, "lr": 0.1, "images_per_second": 100.0,
           "epoch_seconds": 1.0}
    log = EpochLog(Run.open(no_test_run), val_examples=21)
    assert "val_accuracy 0.1111 (+-0.069, 21 images)  lr" in log(row) and log.warned
    assert "note: the val split holds 21 images, so val_accuracy 0.1111 is uncertain by about +-0.069" \
        in capsys.readouterr().out
    log(row)
    assert "note:" not in capsys.readouterr().out  # said once
    assert "val_accuracy 0.9500  lr" in EpochLog(Run.open(no_test_run), echo=False, val_examples=900).line(
        row | {"val_accuracy": 0.95}, 1.0, 0)  # SE 0.007: shown plain


# ----------------------------------------------------------------------------- 20: the RNN recipe's CPU hint


def test_the_quickdraw_recipes_cpu_hint_is_the_benchmarks_pretrained_start():
    """The hint in quickdraw.toml's header (as benchmarks/cpu_threads.py reads it) is a valid config whose
    model, weights, freezing and image size are those benchmarks/quickdraw_real.py scores as `pretrained`."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from cpu_threads import recipe_cpu_hint
        from quickdraw_real import PRETRAINED
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    recipe = ROOT / "recipes" / "quickdraw.toml"
    hint = recipe_cpu_hint(recipe)
    cfg, bench = load_config(recipe, hint), load_config(recipe, [s.replace("'", '"') for s in PRETRAINED])
    assert (cfg.model.name, cfg.model.pretrained, cfg.train.freeze_first, cfg.data.image_size, cfg.data.flip) == (
        bench.model.name, bench.model.pretrained, bench.train.freeze_first, bench.data.image_size, bench.data.flip)
    assert cfg.model.name == "timm:tf_efficientnet_lite0" and cfg.model.pretrained and cfg.train.amp == "off"


def test_the_rnn_recipes_cpu_hint_is_a_valid_config_and_the_benchmarks():
    import sys

    recipe = ROOT / "recipes" / "quickdraw-rnn.toml"
    comment = " ".join(line.lstrip("# ").rstrip("\\ ") for line in recipe.read_text().splitlines()
                       if line.startswith("#"))
    hint = re.findall(r"--set (\S+)", comment[comment.index("quickdraw-rnn.toml --set"):])
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from stroke_gru_cpu import HINT
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert hint == HINT  # the comment's figures are the benchmark's
    cfg = load_config(recipe, hint)
    assert (cfg.model.name, cfg.data.max_points, cfg.train.steps_per_epoch) == ("stroke_gru", 96, 200)
