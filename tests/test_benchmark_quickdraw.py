"""benchmarks/quickdraw_real.py runs end to end (a few CPU seconds per pipeline instead of 600)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_both_pipelines_train_score_and_report(shared_data, capsys):
    spec = importlib.util.spec_from_file_location("quickdraw_real", ROOT / "benchmarks" / "quickdraw_real.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--budget-s", "3", "--data", str(shared_data / "quickdraw" / "simplified")])
    out = capsys.readouterr().out
    results = dict(line.split()[1:] for line in out.splitlines() if line.startswith("RESULT "))
    assert set(results) == {"quickdraw_map3_ours", "quickdraw_map3_reference", "quickdraw_map3_gain"}
    ours, ref, gain = (float(results[f"quickdraw_map3_{k}"]) for k in ("ours", "reference", "gain"))
    assert 0 <= ours <= 1 and 0 <= ref <= 1
    assert abs(gain - (ours - ref)) < 2e-4  # each printed to 4 places
    assert "split by key_id: 6876 train, 1724 val" in out  # the same split for both, every run
