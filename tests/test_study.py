"""Studies: planning a grid, running it (resumable, parallel, failure-tolerant), and its statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from nnlab.cli.app import app
from nnlab.config import load_config
from nnlab.errors import ConfigError
from nnlab.studies.execute import run_study
from nnlab.studies.plan import cell_state, parse_grid_option, plan_study
from nnlab.studies.stats import holm, verdict, welch
from nnlab.training import fit

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "lenet-ablation.toml"
DIGITS_RECIPE = ROOT / "recipes" / "lenet-ablation-digits.toml"
TINY = ["train.epochs=1", "data.batch_size=256"]


# --------------------------------------------------------------------------- planning


def test_parse_grid_option_keeps_typed_values_and_lists():
    name, overrides = parse_grid_option("wide=model.name=mlp,model.hidden=[256,64],optim.lr=0.003")
    assert name == "wide"
    assert overrides == {"model.name": "mlp", "model.hidden": [256, 64], "optim.lr": 0.003}
    assert parse_grid_option("base=") == ("base", {})
    with pytest.raises(ConfigError, match="NAME"):
        parse_grid_option("bad name=optim.lr=1")
    with pytest.raises(ConfigError, match="expected"):
        parse_grid_option("x=optim.lr")


def test_plan_expands_the_recipe_into_variant_by_seed_cells(tmp_path):
    study = plan_study(RECIPE, ["train.epochs=5", "optim.lr=0.5"], seeds=2, out=tmp_path / "s")
    assert list(study.variants) == ["lenet", "alpha", "beta", "gamma", "omicron", "delta"]
    assert len(study.cells) == 12
    first = study.cells[:6]  # seed-major: an interrupted study has every variant at seed 0 first
    assert {c.seed for c in first} == {0} and [c.variant for c in first] == list(study.variants)
    by_label = {c.label: c for c in study.cells}
    omicron = by_label["omicron/seed1"]
    assert omicron.path == (tmp_path / "s" / "omicron" / "seed1").resolve()
    assert omicron.config.model.name == "lenet_omicron"
    assert omicron.config.seed == 1 and omicron.config.train.epochs == 5 and omicron.config.optim.lr == 0.5
    assert omicron.config.study is None
    assert Path(omicron.config.data.path).is_absolute()
    # Recipe settings the assignment fixes.
    base = load_config(RECIPE)
    assert (base.optim.name, base.optim.lr, base.data.batch_size, base.train.epochs) == ("adam", 0.01, 128, 10)
    assert (base.data.kind, base.data.download, base.data.image_size, base.data.channels) == ("idx", True, 28, 1)


def test_plan_grid_option_replaces_the_file_grid_and_wins_over_set(tmp_path):
    study = plan_study(RECIPE, ["optim.lr=0.5"], grid=["slow=optim.lr=0.001", "dflt="], seeds=1, out=tmp_path)
    assert list(study.variants) == ["slow", "dflt"]
    lrs = {c.variant: c.config.optim.lr for c in study.cells}
    assert lrs == {"slow": 0.001, "dflt": 0.5}
    assert plan_study(RECIPE, out=tmp_path).settings.seeds == [0, 1, 2]
    assert plan_study(DIGITS_RECIPE, grid=[], out=tmp_path).cells[0].config.data.kind == "digits"


def test_plan_names_the_variant_of_a_bad_override(tmp_path):
    with pytest.raises(ConfigError, match=r"study.grid.typo.*optim.lrr"):
        plan_study(RECIPE, grid=["typo=optim.lrr=0.1"], out=tmp_path)
    with pytest.raises(ConfigError, match="study.metric"):
        plan_study(RECIPE, ["study.metric=precision"], out=tmp_path)


def test_done_when_command_validates_on_the_shared_mnist_subset(shared_data, tmp_path):
    npz = shared_data / "digits" / "mnist-mini1000" / "mini-mnist-1000.npz"
    study = plan_study(RECIPE, ["train.epochs=5", "data.kind=npz", f"data.path={npz}", "data.val_fraction=0.1",
                                "data.test_fraction=0.2"], seeds=3, out=tmp_path)
    assert len(study.cells) == 18
    assert all(c.config.data.kind == "npz" and c.config.train.epochs == 5 for c in study.cells)


# --------------------------------------------------------------------------- statistics


def test_welch_matches_scipy_and_the_textbook_example():
    # Welch's t-test, Wikipedia's first example: t = -2.46, df = 24.99, p = 0.021.
    a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    w = welch(a, b)
    assert w.t == pytest.approx(-2.46, abs=0.005) and w.df == pytest.approx(24.99, abs=0.01)
    assert w.p == pytest.approx(0.021, abs=0.0005)
    # By hand: the Welch-Satterthwaite statistic and degrees of freedom.
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    assert w.t == pytest.approx(t) and w.df == pytest.approx(df)
    assert w.p == pytest.approx(2 * stats.t.sf(abs(t), df))
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (w.ci_low, w.ci_high) == pytest.approx((w.diff - half, w.diff + half))
    assert w.diff == pytest.approx(np.mean(a) - np.mean(b)) and w.note is None
    # Seed-sized samples: still scipy's numbers.
    x, y = [0.91, 0.93, 0.92], [0.88, 0.90, 0.86]
    assert welch(x, y).p == pytest.approx(stats.ttest_ind(x, y, equal_var=False).pvalue)


def test_welch_is_honest_about_undefined_cases():
    one = welch([0.9], [0.8, 0.85])
    assert math.isnan(one.p) and "n = 1" in one.note and one.diff == pytest.approx(0.075)
    flat = welch([0.9, 0.9, 0.9], [0.8, 0.8, 0.8])  # scipy would say p = 0
    assert math.isnan(flat.p) and "zero variance" in flat.note and flat.diff == pytest.approx(0.1)
    half_flat = welch([0.9, 0.9, 0.9], [0.8, 0.82, 0.78])  # one side varies: the test is defined
    assert math.isfinite(half_flat.p) and half_flat.note is None
    assert half_flat.df == pytest.approx(2.0)


def test_holm_adjustment():
    adjusted = holm([0.01, 0.04, math.nan, 0.03])
    assert adjusted[[0, 1, 3]] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adjusted[2])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("diff, p, metric, direction, significant, words", [
    (0.023, 0.01, "accuracy", "better", True, "A better than B by 2.30 pp; significant at 0.05 (p = 0.01)"),
    (-0.05, 0.2, "accuracy", "worse", False, "A worse than B by 5.00 pp; not significant at 0.05"),
    (0.004, 0.001, "accuracy", "within", True, "A within 1.00 pp of B; significant"),
    (0.92 - 0.91, 0.5, "accuracy", "within", False, "within 1.00 pp"),  # exactly 1 pp is not 'more than'
    (0.2, 0.01, "log_loss", "worse", True, "A worse than B by 0.2;"),     # lower is better for losses
    (0.03, math.nan, "accuracy", "better", None, "untested (n = 1"),
])
def test_verdict(diff, p, metric, direction, significant, words):
    v = verdict("A", "B", diff, p, threshold=0.01, metric=metric, note="n = 1 on one side")
    assert v["direction"] == direction and v["significant"] is significant
    assert words in v["verdict"]


# --------------------------------------------------------------------------- running


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.glob("*/seed*/metrics.json"))}


def test_study_cli_runs_in_parallel_writes_the_report_and_resumes(tmp_path):
    out = tmp_path / "study"
    args = ["study", str(DIGITS_RECIPE), "--grid", "alpha=model.name=lenet_alpha", "--grid",
            "delta=model.name=lenet_delta", "--seeds", "2", "--workers", "2", "--out", str(out),
            *[x for s in TINY for x in ("--set", s)]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"study directory: {out.resolve()}" in result.output
    assert "4 cells trained now" in result.output and "2 workers" in result.output
    assert "| alpha | delta |" in result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["variants"]) == {"alpha", "delta"}
    for name, params in (("alpha", 106_154), ("delta", 17_014)):
        v = report["variants"][name]
        assert {"accuracy_mean", "accuracy_std", "params", "train_seconds", "images_per_second"} <= set(v)
        assert v["n"] == 2 and v["params"] == params and v["train_seconds"] > 0
        values = [json.loads((out / name / f"seed{s}" / "metrics.json").read_text())["test"]["accuracy"]
                  for s in (0, 1)]
        assert v["accuracy_mean"] == pytest.approx(np.mean(values))
        assert v["accuracy_std"] == pytest.approx(np.std(values, ddof=1))
    [pair] = report["pairwise"]
    assert {"a", "b", "diff", "t", "df", "p", "p_holm", "verdict", "direction", "significant"} <= set(pair)
    assert pair["diff"] == pytest.approx(report["variants"]["alpha"]["accuracy_mean"]
                                         - report["variants"]["delta"]["accuracy_mean"])
    assert report["curves"]["alpha"]["epochs"] == [1]
    text = (out / "report.md").read_text()
    assert "| alpha |" in text and "Welch" in text and pair["verdict"] in text
    vals = {n: np.mean([json.loads((out / n / f"seed{s}" / "metrics.json").read_text())["val"]["accuracy"]
                        for s in (0, 1)]) for n in ("alpha", "delta")}
    assert report["best_by_val"] == max(vals, key=vals.get)
    assert f"Chosen by validation accuracy: **{report['best_by_val']}**" in text
    assert (out / "plots" / "accuracy.png").stat().st_size > 0 and (out / "plots" / "curves.png").stat().st_size > 0

    before = _mtimes(out)
    assert len(before) == 4
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "0 cells trained now, 4 already finished" in again.output
    assert _mtimes(out) == before


def test_a_failed_cell_is_reported_and_only_it_runs_again(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = (digits.images * 255 / 16).astype(np.uint8), digits.target.astype(np.int64)
    good, late = tmp_path / "good.npz", tmp_path / "late.npz"
    np.savez(good, images=images, labels=labels)
    base = [*TINY, "data.kind=npz", "model.name=lenet_delta"]
    grid = [f"good=data.path={json.dumps(str(good))}", f"late=data.path={json.dumps(str(late))}"]
    study = plan_study(DIGITS_RECIPE, base, grid=grid, seeds=1, out=tmp_path / "s")
    first = run_study(study, workers=1)
    status = {c.cell.variant: c.status for c in first.cells}
    assert status == {"good": "trained", "late": "failed"}
    [failed] = first.failed
    assert "late.npz" in failed.error and (failed.cell.path / "error.txt").is_file()
    report = json.loads((study.out / "report.json").read_text())
    assert report["variants"]["late"]["n"] == 0 and report["variants"]["good"]["n"] == 1
    assert "Failed cells" in (study.out / "report.md").read_text()
    before = _mtimes(study.out)

    np.savez(late, images=images, labels=labels)  # the cause is fixed: re-run the same study
    second = run_study(plan_study(DIGITS_RECIPE, base, grid=grid, seeds=1, out=tmp_path / "s"), workers=1)
    assert {c.cell.variant: c.status for c in second.cells} == {"good": "done", "late": "trained"}
    after = _mtimes(study.out)
    assert after["good/seed0/metrics.json"] == before["good/seed0/metrics.json"]
    assert "late/seed0/metrics.json" in after and not (failed.cell.path / "error.txt").exists()
    assert json.loads((study.out / "report.json").read_text())["variants"]["late"]["n"] == 1


def test_a_cell_killed_midway_resumes_from_its_checkpoint(tmp_path):
    overrides = ["train.epochs=2", "data.batch_size=256", "model.name=lenet_delta"]
    study = plan_study(DIGITS_RECIPE, overrides, grid=["d="], seeds=2, out=tmp_path / "s")
    killed = study.cells[1]
    fit(killed.config, out=killed.path, stop_after_epoch=1)  # what a kill after epoch 1 leaves behind
    assert cell_state(killed) == "resume" and cell_state(study.cells[0]) == "new"
    epoch1 = (killed.path / "history.csv").read_text().splitlines()[:2]
    outcome = run_study(study, workers=1)
    assert [c.status for c in outcome.cells] == ["trained", "resumed"]
    history = (killed.path / "history.csv").read_text().splitlines()
    assert len(history) == 3 and history[:2] == epoch1  # epoch 1 kept, only epoch 2 trained now
    assert cell_state(killed) == "done"


def test_a_finished_cell_with_another_config_is_not_mixed_in(tmp_path):
    study = plan_study(DIGITS_RECIPE, [*TINY, "model.name=lenet_delta"], grid=["d="], seeds=1, out=tmp_path)
    run_study(study, workers=1)
    changed = plan_study(DIGITS_RECIPE, [*TINY, "model.name=lenet_delta", "optim.lr=0.1"], grid=["d="], seeds=1,
                         out=tmp_path)
    with pytest.raises(ConfigError, match=r"different config.*optim.lr"):
        run_study(changed, workers=1)


def test_best_variant_is_chosen_on_validation_never_on_test():
    from nnlab.studies.report import best_by_val

    table = {"lr=0.1": {"val_mean": 0.80}, "lr=0.01": {"val_mean": 0.90}, "lr=0.001": {"val_mean": float("nan")}}
    assert best_by_val(table, higher=True) == "lr=0.01"
    assert best_by_val(table, higher=False) == "lr=0.1"  # e.g. a loss
    assert best_by_val({"a": {"val_mean": float("nan")}}, higher=True) is None
