"""Working the way users work: the Python API, the per-epoch lines, TensorBoard, the LR finder, and the
newcomer's paper cuts (on scikit-learn's digits, through the real entry points)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_runner import CliResult
from cli_runner import run_cli as nnlab_cli
from sklearn.datasets import load_digits

import nnlab
from nnlab.config import validate
from nnlab.errors import ConfigError, ModelError, NnlabError

CONFIG = """
name = "wf"
seed = 1
[data]
kind = "digits"
image_size = 16
batch_size = 64
[model]
name = "lenet_alpha"
[optim]
lr = 0.003
[schedule]
name = "cosine"
[train]
epochs = 2
keep_best = 2
tensorboard = true
tensorboard_every = 5
"""
LINE = re.compile(r"^epoch (\d+)/(\d+)  train_loss (\d+\.\d{4})  val_accuracy (\d\.\d{4})( \(\+-0\.\d+, \d+ images\))?"
                  r"  lr \S+  [\d,]+ img/s  "
                  r"data wait \d+%  \d+\.\d s  ETA \S+( s)?$")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[Path, CliResult]:
    """A 2-epoch run through `nnlab run`, stdout a pipe (not a terminal), TensorBoard on, plots drawn."""
    root = tmp_path_factory.mktemp("wf")
    (root / "wf.toml").write_text(CONFIG)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NNLAB_PLOTS", "1")
        proc = nnlab_cli("run", root / "wf.toml", "--out", root / "run")
    return root / "run", proc


def test_per_epoch_lines_on_a_pipe_and_in_train_log(cli_run):
    run, proc = cli_run
    printed = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert len(printed) == 2 and all(LINE.match(line) for line in printed), proc.stdout
    assert [x for x in (run / "train.log").read_text().splitlines() if x.startswith("epoch ")] == printed
    with (run / "history.csv").open() as fh:
        history = list(csv.DictReader(fh))
    for line, row in zip(printed, history, strict=True):  # the line shows the history row's numbers
        m = LINE.match(line)
        assert int(m[1]) == int(row["epoch"]) and m[2] == "2"
        assert float(m[3]) == pytest.approx(float(row["train_loss"]), abs=1e-4)
        assert float(m[4]) == pytest.approx(float(row["val_accuracy"]), abs=1e-4)
    assert "\r" not in proc.stdout + proc.stderr  # no tqdm bar redraws off a terminal


def test_tensorboard_events_read_back(cli_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = cli_run
    with (run / "history.csv").open() as fh:
        history = list(csv.DictReader(fh))
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    val = [e.value for e in events.Scalars("val/accuracy")]
    assert val == pytest.approx([float(r["val_accuracy"]) for r in history], abs=1e-6)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    steps = [e.step for e in events.Scalars("step/train_loss")]
    assert steps and all(s % 5 == 0 for s in steps)
    assert {"plots/history", "plots/confusion"} <= set(tags["images"])
    hparams = EventAccumulator(str(run / "tensorboard"))  # add_hparams writes the final metrics as scalars
    hparams.Reload()
    metrics = json.loads((run / "metrics.json").read_text())
    assert hparams.Scalars("hparam/test_accuracy")[0].value == pytest.approx(metrics["test"]["accuracy"])


def test_checkpoint_names_count_epochs_from_1(cli_run):
    run, _ = cli_run
    names = sorted(p.name for p in (run / "checkpoints").glob("best-*.pt"))
    epochs = sorted(int(re.match(r"best-e(\d+)-", n)[1]) for n in names)
    assert epochs == [1, 2]  # keep_best = 2 of 2 epochs
    with (run / "history.csv").open() as fh:
        acc = {int(r["epoch"]): float(r["val_accuracy"]) for r in csv.DictReader(fh)}
    for n in names:
        e = int(re.match(r"best-e(\d+)-", n)[1])
        assert f"accuracy-{acc[e]:.4f}" in n


def test_python_api_load_predict_evaluate_plot(cli_run):
    path, _ = cli_run
    run = nnlab.load_run(path)
    metrics = json.loads((path / "metrics.json").read_text())
    assert run.metrics == metrics and run.config.train.epochs == 2
    assert [r["epoch"] for r in run.history] == [1, 2]
    frame = run.history_frame()
    assert list(frame.index) == [1, 2] and frame["val_accuracy"].tolist() == [r["val_accuracy"] for r in run.history]
    # predict the test split's images as the CLI does, and compare with predictions/test.csv
    with (path / "predictions" / "test.csv").open() as fh:
        saved = list(csv.DictReader(fh))
    digits = load_digits()
    ids = [int(r["id"]) for r in saved[:20]]
    images = (digits.images[ids] * (255 / 16)).round().astype(np.uint8)
    pred = run.predict(images)
    assert pred.labels == [r["top1"] for r in saved[:20]]
    p_saved = np.array([[float(r[f"p_{c}"]) for c in run.classes] for r in saved[:20]])
    np.testing.assert_allclose(pred.probs, p_saved, atol=1e-4)
    assert pred.top(2)[0][0] == (pred.labels[0], pytest.approx(float(pred.probs[0].max())))
    assert run.evaluate("test")["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    fig = run.plot_history()
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    conf = run.plot_confusion()
    assert conf.axes[0].get_title().startswith("test confusion")
    matrix = conf.axes[0].images[0].get_array()
    assert matrix.shape == (10, 10) and np.allclose(np.asarray(matrix).sum(1), 1, atol=1e-6)


def test_resume_extends_a_finished_run_and_replans_the_schedule(cli_run, tmp_path):
    src, _ = cli_run
    copy = tmp_path / "run"
    shutil.copytree(src, copy)
    before = [r["lr"] for r in nnlab.load_run(copy).history]
    proc = nnlab_cli("resume", copy, "--epochs", "4")
    run = nnlab.load_run(copy)
    assert [r["epoch"] for r in run.history] == [1, 2, 3, 4] and run.config.train.epochs == 4
    assert "epochs = 4" in (copy / "config.toml").read_text()
    assert [r["lr"] for r in run.history][:2] == before
    # cosine re-planned over 4 epochs: 3/4 of the way at the end of epoch 3 (the old plan had ended at 0)
    assert before[1] == pytest.approx(0, abs=1e-9)
    assert run.history[2]["lr"] == pytest.approx(0.003 * 0.5 * (1 + np.cos(0.75 * np.pi)), rel=1e-6)
    assert run.metrics["epochs"] == 4 and "epoch 3/4" in proc.stdout


def test_a_run_failing_before_its_first_epoch_leaves_no_directory(tmp_path):
    cfg = tmp_path / "bad.toml"
    for override, message in (("model.name=lenet_alfa", "did you mean 'lenet_alpha'"),
                              ("data.kind=npzz", "did you mean 'npz'"),
                              ("data.kind=npz", "data.path")):
        cfg.write_text(CONFIG)
        out = tmp_path / "run"
        proc = nnlab_cli("run", cfg, "--out", out, "--set", override, ok=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert message in proc.stderr and str(cfg) in proc.stderr, proc.stderr
        assert not out.exists()


def test_relative_missing_path_says_where_it_was_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = validate({"data": {"kind": "npz", "path": "nowhere/x.npz"}, "train": {"epochs": 1}})
    with pytest.raises(NnlabError, match=r"nowhere/x\.npz.*resolved against the current directory " +
                       re.escape(str(tmp_path))):
        nnlab.fit(cfg, out=tmp_path / "run", echo=False)
    assert not (tmp_path / "run").exists()


def test_epochs_as_a_string_is_rejected_and_amp_on_cpu_says_so(tmp_path, capsys):
    with pytest.raises(ConfigError, match="train.epochs"):
        validate({"train": {"epochs": "15"}})
    cfg = validate({"name": "amp", "data": {"kind": "digits", "image_size": 8, "batch_size": 256},
                    "model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 1, "amp": "bf16"}})
    nnlab.fit(cfg, out=tmp_path / "run")
    out = capsys.readouterr().out
    assert "train.amp = 'bf16' applies on CUDA only" in out
    assert "epoch 1/1" in out


def test_plurals():
    from nnlab.progress import format_seconds, plural

    assert [plural(1, "epoch"), plural(2, "epoch"), plural(1500, "cell")] == ["1 epoch", "2 epochs", "1,500 cells"]
    assert [format_seconds(5), format_seconds(187), format_seconds(3723)] == ["5 s", "3:07", "1:02:03"]


def test_unknown_model_did_you_mean():
    from nnlab.models import build_model

    with pytest.raises(ModelError, match="did you mean 'lenet_gamma'"):
        build_model(validate({"model": {"name": "lenet_gama"}}).model, 1, 10, 28)


def test_lr_find_on_digits_suggests_a_rate_that_trains(tmp_path):
    base = {"name": "lrf", "seed": 0, "data": {"kind": "digits", "image_size": 16, "batch_size": 32},
            "model": {"name": "lenet_alpha"}, "optim": {"name": "sgd", "momentum": 0.9}, "train": {"epochs": 2}}
    proc = nnlab_cli("lr-find", _write(tmp_path / "lrf.toml", base), "--out", tmp_path / "lrf", "--steps", "100",
                     "--start-lr", "1e-6", "--end-lr", "10")
    data = json.loads((tmp_path / "lrf" / "lr_find.json").read_text())
    assert (tmp_path / "lrf" / "lr_find.png").stat().st_size > 10_000
    assert sorted(tmp_path.joinpath("lrf").iterdir()) == [tmp_path / "lrf" / "lr_find.json",
                                                           tmp_path / "lrf" / "lr_find.png"]
    lrs = data["lrs"]
    assert lrs[0] == pytest.approx(1e-6) and np.all(np.diff(lrs) > 0)
    assert data["diverged"], "SGD with momentum ramped to lr 10 must blow the loss up and stop early"
    assert len(lrs) < 100 and lrs[-1] < 10
    for key in ("steepest", "valley"):
        assert lrs[0] < data[key] < lrs[-1]
    assert f"--set optim.lr={data['suggestion']:.3g}" in proc.stdout
    # training at the suggestion learns: loss falls from ln(10) and stays finite
    run = nnlab.fit(base, {"optim.lr": data["suggestion"]}, out=tmp_path / "run", echo=False)
    losses = [r["train_loss"] for r in run.history]
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * np.log(10)
    assert run.metrics["test"]["accuracy"] > 0.5


def _write(path: Path, raw: dict) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps(raw))
    return path


# --------------------------------------------------------------------------- paper cuts of the CLI


COMMANDS = (["run"], ["resume"], ["eval"], ["predict"], ["report"], ["compare"], ["summary"], ["models"],
            ["study"], ["lr-find"], ["runs"], ["export"], ["serve"], ["data", "prepare"], ["data", "info"],
            ["data", "export"], ["data", "synth"], ["data", "show"])


def test_version_and_help_texts_name_no_python_types_and_give_an_example():
    assert nnlab_cli("--version").stdout.strip() == f"nnlab {nnlab.__version__}"
    for args in COMMANDS:
        text = nnlab_cli(*args, "--help").stdout
        assert "Example: nnlab " in text, args
        for python in ("<bool>", "<list[", "<path>", "<int>", "<str>", "{"):
            assert python not in text, (args, python, text)
    predict = nnlab_cli("predict", "--help").stdout
    assert "--top-k N" in predict and "Classes listed per input" in predict
    assert "default: grid.png, or RUN/plots/samples.png" in nnlab_cli("data", "show", "--help").stdout


def test_models_match_substrings_describe_themselves_and_say_when_nothing_matches():
    lines = nnlab_cli("models", "lenet", "--no-timm").stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == ["lenet", "lenet_alpha", "lenet_beta", "lenet_delta", "lenet_gamma", "lenet_omicron"]
    described = dict(line.split(None, 1) for line in lines)
    assert "ReLU" in described["lenet_alpha"] and "max pooling" in described["lenet_beta"]
    assert "no convolutions" in described["lenet_delta"] and "no pooling" in described["lenet_omicron"]
    timm = nnlab_cli("models", "resnet18").stdout.split()
    assert "timm:resnet18" in timm and "timm:seresnet18" in timm
    proc = nnlab_cli("models", "resnetzz", ok=False)
    assert proc.returncode == 2 and "no model matches 'resnetzz'" in proc.stderr


def test_serve_on_a_busy_port_is_one_line_naming_port(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = nnlab_cli("serve", tmp_path, "--port", port, ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and f"--port {port + 1}" in proc.stderr and f"127.0.0.1:{port}" in proc.stderr


def test_predict_marks_an_unreadable_image_and_on_bad_error_stops(cli_run, tmp_path):
    from PIL import Image

    run, _ = cli_run
    folder = tmp_path / "imgs"
    folder.mkdir()
    digits = load_digits()
    for i in (0, 1):
        Image.fromarray((digits.images[i] * (255 / 16)).astype(np.uint8)).save(folder / f"d{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    proc = nnlab_cli("predict", run, folder, "--out", tmp_path / "p.csv")
    assert "broken.png" in proc.stderr and "unreadable" in proc.stderr and "wrote 3 rows" in proc.stdout
    with (tmp_path / "p.csv").open() as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    assert rows["broken.png"]["top1"] == "unreadable" and rows["broken.png"]["p_0"] == ""
    assert rows["d0.png"]["top1"] in [str(k) for k in range(10)]
    assert sum(float(rows["d1.png"][f"p_{k}"]) for k in range(10)) == pytest.approx(1, abs=1e-4)
    bad = nnlab_cli("predict", run, folder, "--out", tmp_path / "q.csv", "--on-bad", "error", ok=False)
    assert bad.returncode == 2 and "broken.png" in bad.stderr and "Traceback" not in bad.stderr


def test_runs_lists_status_metric_and_age_and_removes_failed(cli_run, tmp_path):
    from nnlab.training import fit as train

    finished, _ = cli_run
    root = tmp_path / "runs"
    shutil.copytree(finished, root / "done")
    cfg = nnlab.make_config({"name": "cut", "data": {"kind": "digits", "image_size": 8, "batch_size": 256},
                             "model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 3}})
    train(cfg, out=root / "cut", stop_after_epoch=1, echo=False)
    (root / "broken" / "checkpoints").mkdir(parents=True)  # as Run.create makes it, then died before a checkpoint
    shutil.copy(finished / "config.toml", root / "broken" / "config.toml")
    text = nnlab_cli("runs", root).stdout
    status = {line.split()[0]: line.split()[1:] for line in text.splitlines()[1:]}
    acc = json.loads((finished / "metrics.json").read_text())["test"]["accuracy"]
    assert status["done"][:4] == ["finished", "2", "accuracy", f"{acc:.4f}"]
    assert status["cut"][:2] == ["interrupted", "1"] and status["broken"][:2] == ["failed", "0"]
    removed = nnlab_cli("runs", root, "--remove-failed").stdout
    assert "removed 1 failed run" in removed and not (root / "broken").exists()
    assert (root / "done").exists() and (root / "cut").exists()


def test_study_verdicts_use_holm_and_flag_a_variant_at_chance(tmp_path):
    from nnlab.config import StudyConfig
    from nnlab.studies.plan import Cell, CellOutcome, Study
    from nnlab.studies.report import collect, format_report
    from nnlab.studies.stats import holm, welch

    values = {"a": [0.90, 0.91, 0.93], "b": [0.86, 0.88, 0.89], "c": [0.10, 0.09, 0.12], "d": [0.905, 0.915, 0.92]}
    cfg = validate({"name": "s"})
    outcomes = []
    for name, vals in values.items():
        for seed, v in enumerate(vals):
            where = tmp_path / name / f"seed{seed}"
            where.mkdir(parents=True)
            (where / "metrics.json").write_text(json.dumps({"test": {"accuracy": v}, "val": {"accuracy": v},
                                                            "params": 10, "train_seconds": 1.0,
                                                            "images_per_second": 5.0}))
            (where / "classes.txt").write_text("\n".join(map(str, range(10))) + "\n")
            outcomes.append(CellOutcome(Cell(name, seed, where, cfg), "done"))
    study = Study("s", tmp_path, StudyConfig(seeds=[0, 1, 2]), {n: {} for n in values}, [o.cell for o in outcomes])
    data = collect(study, outcomes)
    ab = next(p for p in data["pairwise"] if (p["a"], p["b"]) == ("a", "b"))
    pairs = [(x, y) for i, x in enumerate(values) for y in list(values)[i + 1:]]
    raw = [welch(values[x], values[y]).p for x, y in pairs]
    assert ab["p"] == pytest.approx(raw[0]) and ab["p_holm"] == pytest.approx(holm(raw)[0])
    # significant by Welch's p alone, not once the six comparisons are accounted for: the verdict says not
    assert ab["p"] < 0.05 < ab["p_holm"] and ab["significant"] is False
    assert f"not significant at 0.05 (Holm-adjusted p = {ab['p_holm']:.3g})" in ab["verdict"]
    assert [n for n, v in data["variants"].items() if v["at_chance"]] == ["c"]
    text = format_report(data | {"plots": []})
    assert "At chance level" in text and "**c**" in text and "(at chance: 10 classes)" in text


def test_the_page_credits_quickdraw_under_show_me_one():
    page = (Path(nnlab.__file__).parent / "serve" / "static" / "index.html").read_text()
    after = page[page.index("Show me one"):]
    assert "Quick, Draw!" in after[:600] and "CC BY 4.0" in after[:600]


def test_gitignore_covers_the_folders_the_readme_creates():
    root = Path(__file__).resolve().parents[1]
    for made in ("runs/x", "studies/x", "data/quickdraw", "export/model.onnx"):
        assert subprocess.run(["git", "check-ignore", "-q", made], cwd=root).returncode == 0, made
    for kept in ("src/nnlab/runs/plots.py", "src/nnlab/runs/__init__.py"):
        assert subprocess.run(["git", "check-ignore", "-q", kept], cwd=root).returncode == 1, kept


def test_top_losses_picks_the_highest_cross_entropy(cli_run, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import nnlab.evaluation.results as results

    run, _ = cli_run
    assert (run / "plots" / "top_losses.png").stat().st_size > 10_000
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=30).astype(np.float32)
    labels = rng.integers(0, 4, 30)
    images = rng.integers(0, 255, (40, 5, 5), dtype=np.uint8)
    indices = np.arange(10, 40)
    data = SimpleNamespace(image=lambda i: images[i], ids={"val": indices}, labels={"val": labels},
                           classes=list("abcd"))
    seen = {}
    monkeypatch.setattr(results, "top_losses_figure", lambda ims, titles, wrong, split: _figure(seen, ims, titles, wrong))
    target = SimpleNamespace(plots=tmp_path)
    results.write_top_losses(target, data, "val", probs, k=5)
    loss = -np.log(probs[np.arange(30), labels])  # the reference: cross-entropy per example
    expected = np.argsort(-loss)[:5]
    for im, i in zip(seen["ims"], expected, strict=True):
        np.testing.assert_array_equal(im, images[indices[i]])
    assert seen["wrong"] == [bool(probs[i].argmax() != labels[i]) for i in expected]
    assert seen["titles"][0].startswith(f"{'abcd'[probs[expected[0]].argmax()]} / {'abcd'[labels[expected[0]]]}")
    assert (tmp_path / "top_losses.png").is_file()


def _figure(seen, images, titles, wrong):
    from nnlab.runs.plots import top_losses_figure

    seen.update(ims=images, titles=titles, wrong=wrong)
    return top_losses_figure(images, titles, wrong, "val")


def test_data_show_works_for_image_runs_and_wrong_shows_only_mistakes(cli_run, tmp_path, monkeypatch):
    import nnlab.inference.samples as samples

    run, _ = cli_run
    proc = nnlab_cli("data", "show", run, "--n", "12")
    assert (run / "plots" / "samples.png").stat().st_size > 10_000 and "samples.png" in proc.stdout
    seen = []
    real = samples.top_losses_figure
    monkeypatch.setattr(samples, "top_losses_figure", lambda *a: seen.append(a) or real(*a))
    samples.show_run_samples(run, tmp_path / "all.png", n=200)
    samples.show_run_samples(run, tmp_path / "wrong.png", n=200, wrong_only=True)
    (_, titles, wrong, split), (_, wtitles, wwrong, _) = seen
    assert split == "val" and len(titles) == 180  # the digits' val split, all of it
    acc = nnlab.load_run(run).metrics["val"]["accuracy"]  # of the best checkpoint, as the grid uses
    assert 1 - sum(wrong) / len(wrong) == pytest.approx(acc, abs=1e-9)  # the guesses are the model's
    assert all(wwrong) and len(wtitles) == sum(wrong) and all("(is " in t for t in wtitles)
    assert sorted(wtitles) == sorted(t for t, w in zip(titles, wrong, strict=True) if w)


def test_report_says_1_epoch_not_1_epochs(tmp_path):
    from nnlab.runs.report import format_report
    from nnlab.runs.run import Run

    cfg = validate({"name": "one", "data": {"kind": "digits", "image_size": 8, "batch_size": 256},
                    "model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 1}})
    run = nnlab.fit(cfg, out=tmp_path / "run", echo=False)
    text = format_report(Run.open(run.path))
    assert "trained    1 epoch in" in text and "1 epochs" not in text


def test_a_corrupt_image_before_the_first_epoch_leaves_no_directory(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for k in range(4):
            Image.fromarray(np.full((8, 8), 40 * k, np.uint8)).save(tmp_path / "imgs" / cls / f"{k}.png")
    (tmp_path / "imgs" / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cfg = tmp_path / "folder.toml"
    cfg.write_text(f'name = "f"\n[data]\nkind = "folder"\npath = "{tmp_path / "imgs"}"\nimage_size = 8\n'
                   '[model]\nname = "lenet_alpha"\n[train]\nepochs = 1\n')
    out = tmp_path / "run"
    proc = nnlab_cli("run", cfg, "--out", out, ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "bad.png" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


def test_compare_shows_open_set_metrics_of_embedding_runs(tmp_path):
    from nnlab.runs.report import compare_table
    from nnlab.runs.run import Run

    runs = []
    for name, rank1, eer in (("arc", 0.91, 0.05), ("ce", 0.72, 0.12)):
        run = Run.create(validate({"name": name, "data": {"kind": "folder", "path": str(tmp_path), "split": "identity"},
                                   "model": {"name": "timm:resnet10t", "head": "arcface"},
                                   "eval": {"main_metric": "accuracy"}}), tmp_path / name)
        run.write_json("metrics.json", {"model": "timm:resnet10t", "engine": "torch", "params": 1000, "epochs": 2,
                                        "train_seconds": 3.0, "images_per_second": 100.0,
                                        "main_metric": "accuracy", "val": {"accuracy": 0.9},
                                        "test": {"rank1": rank1, "eer": eer, "roc_auc": 0.97}})
        runs.append(run)
    table = compare_table(runs)
    header = [c.strip() for c in table.splitlines()[0].split("|")]
    assert "test rank1" in header and "test eer" in header and "val accuracy" in header, header
    rows = [[c.strip() for c in line.split("|")] for line in table.splitlines()[2:]]
    by_name = {r[1]: r for r in rows}
    assert by_name["arc"][header.index("test rank1")] == "0.9100"
    assert by_name["ce"][header.index("test eer")] == "0.1200"


def test_resume_extends_an_interrupted_run(tmp_path):
    from nnlab.training import fit as train

    cfg = validate({"name": "cut", "seed": 1, "data": {"kind": "digits", "image_size": 16, "batch_size": 64},
                    "model": {"name": "lenet_alpha"}, "optim": {"name": "adam", "lr": 0.003},
                    "schedule": {"name": "cosine"}, "train": {"epochs": 3, "threads": 1}})
    part = train(cfg, out=tmp_path / "run", stop_after_epoch=1)  # as a kill after epoch 1 would leave it
    assert not (part.path / "metrics.json").exists()
    run = nnlab.resume(part.path, epochs=4, echo=False)
    assert [r["epoch"] for r in run.history] == [1, 2, 3, 4] and run.config.train.epochs == 4
    assert run.metrics["epochs"] == 4 and "epochs = 4" in (part.path / "config.toml").read_text()
