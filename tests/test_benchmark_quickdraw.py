"""benchmarks/quickdraw_real.py runs end to end (a CPU second per pipeline instead of 600, on 48 of the words)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark():
    """benchmarks/quickdraw_real.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("quickdraw_real", ROOT / "benchmarks" / "quickdraw_real.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


WORDS = 48  # of the 344 shared words: every pipeline and score path at a seventh of the scoring work


def test_both_pipelines_train_score_and_report(shared_data, capsys, tmp_path):
    bench = load_benchmark()
    words = tmp_path / "words"
    words.mkdir()
    for file in sorted((shared_data / "quickdraw" / "simplified").glob("*.ndjson"))[:WORDS]:
        (words / file.name).symlink_to(file)
    bench.main(["--budget-s", "1", "--seeds", "1", "--data", str(words), "--json", str(tmp_path / "scores.json")])
    out = capsys.readouterr().out
    # the per-seed scores, summarised again (as when two processes ran halves of the variants)
    bench.main(["--combine", str(tmp_path / "scores.json")])
    again = capsys.readouterr().out
    assert [x for x in again.splitlines() if x.startswith("RESULT ")] == [
        x for x in out.splitlines() if x.startswith("RESULT ")]
    results = {k.removeprefix("quickdraw_map3_"): float(v)
               for k, v in (line.split()[1:] for line in out.splitlines() if line.startswith("RESULT "))}
    for variant in bench.VARIANTS:
        assert 0 <= results[variant] <= 1 and results[f"{variant}_std"] == 0  # one seed: no spread
    assert abs(results["gain"] - (results["cnn"] - results["reference"])) < 2e-4  # each printed to 4 places
    assert abs(results["tta_gain"] - (results["cnn_tta"] - results["cnn_ema"])) < 2e-4
    assert abs(results["balance_gain"] - (results["blend_balanced"] - results["blend_sub"])) < 2e-4
    assert abs(results["blend_gain"] - (results["blend"] - max(results["cnn_ema"], results["seq"]))) < 2e-4
    # one split by key_id for every model: 20% of the drawings scored, the rest trained on
    n, classes, train, val = map(int, re.search(r"data: (\d+) drawings, (\d+) classes; split by key_id: "
                                                r"(\d+) train, (\d+) val", out).groups())
    assert classes == WORDS and train + val == n and abs(val / n - 0.2) < 0.03
    assert "blend: cnn weight" in out and "chosen on" in out


def test_combine_merges_halves_by_seed(tmp_path, capsys):
    bench = load_benchmark()
    (tmp_path / "a.json").write_text(json.dumps([{"cnn": 0.5, "cnn_ema": 0.6}, {"cnn": 0.4, "cnn_ema": 0.6}]))
    (tmp_path / "b.json").write_text(json.dumps([{"seq": 0.3, "blend": 0.7}, {"seq": 0.5, "blend": 0.6}]))
    bench.main(["--combine", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    results = dict(line.split()[1:] for line in capsys.readouterr().out.splitlines() if line.startswith("RESULT "))
    assert float(results["quickdraw_map3_ema_gain"]) == pytest.approx(0.15)  # seeds paired: (0.1 + 0.2) / 2
    assert float(results["quickdraw_map3_blend_gain"]) == pytest.approx(0.05)  # (0.7 - 0.6 + 0.6 - 0.6) / 2
    assert float(results["quickdraw_map3_seq"]) == pytest.approx(0.4)
    (tmp_path / "c.json").write_text(json.dumps([{"seq": 0.3}]))
    with pytest.raises(SystemExit, match="different numbers of seeds"):
        bench.main(["--combine", str(tmp_path / "a.json"), str(tmp_path / "c.json")])


def test_tune_scores_a_slice_of_train_and_never_touches_validation(shared_data, capsys):
    bench = load_benchmark()
    from nnlab.store.splits import key_id_split

    keys = np.random.default_rng(0).integers(0, 2**62, 20_000)
    plain = key_id_split(keys, *bench.scored_fractions(False))
    tune = key_id_split(keys, *bench.scored_fractions(True))
    assert np.array_equal(tune["test"], plain["val"])  # validation: neither trained on nor scored
    assert np.isin(tune["val"], plain["train"]).all() and np.isin(tune["train"], plain["train"]).all()
    assert np.array_equal(np.union1d(tune["train"], tune["val"]), plain["train"])
    assert abs(len(tune["val"]) / len(plain["train"]) - 0.15) < 0.01

    bench.main(["--budget-s", "1", "--seeds", "1", "--variants", "cnn", "--tune",
                "--data", str(shared_data / "quickdraw" / "simplified")])
    out = capsys.readouterr().out
    assert "5822 train, 1054 tuning part of train (validation unused)" in out
    results = [line.split()[1] for line in out.splitlines() if line.startswith("RESULT ")]
    assert results and all(name.startswith("quickdraw_tune_map3_") for name in results)


def test_a_learning_curve_is_summarised_per_budget_with_gains_over_cnn_ema(tmp_path, capsys):
    bench = load_benchmark()
    curve = {"300": [{"cnn_ema": 0.4, "pretrained": 0.5, "distill": 0.45, "distill_teacher": 0.52},
                     {"cnn_ema": 0.42, "pretrained": 0.56, "distill": 0.47, "distill_teacher": 0.5}],
             "600": [{"cnn_ema": 0.46, "mixup": 0.47}, {"cnn_ema": 0.47, "mixup": 0.46}]}
    (tmp_path / "curve.json").write_text(json.dumps(curve))
    bench.main(["--combine", str(tmp_path / "curve.json")])
    results = dict(line.split()[1:] for line in capsys.readouterr().out.splitlines() if line.startswith("RESULT "))
    assert float(results["quickdraw_map3_300s_pretrained_gain"]) == pytest.approx(0.12)  # (0.1 + 0.14) / 2
    assert float(results["quickdraw_map3_300s_pretrained_gain_std"]) == pytest.approx(np.std([0.1, 0.14], ddof=1),
                                                                                     abs=1e-4)
    assert float(results["quickdraw_map3_300s_distill_vs_teacher"]) == pytest.approx(-0.05)
    assert float(results["quickdraw_map3_600s_mixup_gain"]) == pytest.approx(0.0)
    assert "quickdraw_map3_600s_pretrained" not in results and "quickdraw_map3_cnn_ema" not in results
    assert set(bench.GROUPS["cnn"]) | {"distill_teacher"} <= set(bench.ALL_VARIANTS)


def test_the_distilled_student_takes_its_teachers_input(tmp_path):
    """The benchmark's student is fed the batch its teachers see: their image size, channels and input."""
    bench = load_benchmark()
    from nnlab.datasets.strokes import input_signature

    student = bench.ours_config(0, tmp_path, bench.DISTILL_STUDENT)
    teacher = bench.ours_config(0, tmp_path, bench.PRETRAINED)
    assert input_signature(student.data) == input_signature(teacher.data)
    assert student.model.name == "timm:mobilenetv3_small_050" and student.data.image_size == 48  # the demo's size
    assert (student.data.mean, student.data.std) == (teacher.data.mean, teacher.data.std)
