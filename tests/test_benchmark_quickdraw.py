"""benchmarks/quickdraw_real.py runs end to end (a few CPU seconds per pipeline instead of 600)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_both_pipelines_train_score_and_report(shared_data, capsys):
    spec = importlib.util.spec_from_file_location("quickdraw_real", ROOT / "benchmarks" / "quickdraw_real.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--budget-s", "2", "--seeds", "1", "--data", str(shared_data / "quickdraw" / "simplified")])
    out = capsys.readouterr().out
    results = {k.removeprefix("quickdraw_map3_"): float(v)
               for k, v in (line.split()[1:] for line in out.splitlines() if line.startswith("RESULT "))}
    for variant in bench.VARIANTS:
        assert 0 <= results[variant] <= 1 and results[f"{variant}_std"] == 0  # one seed: no spread
    assert abs(results["gain"] - (results["cnn"] - results["reference"])) < 2e-4  # each printed to 4 places
    assert abs(results["balance_gain"] - (results["blend_balanced"] - results["blend_sub"])) < 2e-4
    assert abs(results["blend_gain"] - (results["blend"] - max(results["cnn_ema"], results["seq"]))) < 2e-4
    assert "split by key_id: 6876 train, 1724 val" in out  # the same split for every model, every run
    assert "blend: cnn weight" in out and "chosen on" in out
