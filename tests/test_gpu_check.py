"""benchmarks/gpu_check.py --dry-run: every step of the CUDA check, on the CPU at toy sizes, so the
script is known to work before a GPU machine is lent for the few minutes it takes there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)
def test_gpu_check_dry_run_runs_every_step(ddp_run):
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    # the torchrun step reads test_ddp's torchrun run rather than launching a second one
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--budget", "900",
                           "--torchrun-run", str(ddp_run[1])], capture_output=True, text=True, timeout=580, env=env,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            _, name, value = line.split()
            results[name] = float(value)
    assert not [k for k in results if k.endswith("_skipped") or k.endswith("_ok") and results[k] == 0]
    for workers in (1, 2):
        assert 0 <= results[f"train_bf16_{workers}w_data_wait_fraction"] < 1
        assert results[f"train_bf16_{workers}w_images_per_second"] > 0
        assert results[f"loader_{workers}w_images_per_second"] > 0 and f"loader_vs_model_{workers}w" in results
    for cl in (0, 1):
        for compiled in (0, 1):
            assert results[f"model_only_cl{cl}_compile{compiled}_images_per_second"] > 0
        assert f"model_only_cl{cl}_compile1_warmup_seconds" in results
    assert results["torchrun_gloo_ok"] == 1 and results["torchrun_gloo_images_per_second"] > 0
    assert results["export_ok"] == 1 and results["export_max_abs_diff"] < 1e-4
