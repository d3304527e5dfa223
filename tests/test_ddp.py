"""DistributedDataParallel with two CPU processes (gloo), launched by torchrun as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = """
name = "ddp"
seed = 1
[data]
kind = "digits"
image_size = 16
batch_size = 32
[model]
name = "lenet_alpha"
[optim]
lr = 0.003
[train]
epochs = 2
"""


@pytest.mark.timeout(600)
def test_two_process_gloo_run(tmp_path: Path):
    (tmp_path / "exp.toml").write_text(CONFIG)
    out = tmp_path / "run"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "nnlab", "run", str(tmp_path / "exp.toml"), "--out", str(out)],
                          capture_output=True, text=True, timeout=540, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("finished:") == 1  # only rank 0 reports
    env_json = json.loads((out / "env.json").read_text())
    assert env_json["world_size"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    # metrics are gathered from both ranks: the whole test split is scored, not one shard
    splits = json.loads((out / "splits.json").read_text())
    assert metrics["data"]["sizes"]["test"] == len(splits["test"])
    rows = (out / "predictions" / "test.csv").read_text().splitlines()
    assert len(rows) - 1 == len(splits["test"])
    assert metrics["test"]["accuracy"] > 0.5
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs, written once
