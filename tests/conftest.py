from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import run_cli
from shared_runs import end_session, made_once, session_root, start_session

os.environ.setdefault("NNLAB_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
# no plots at the end of a fit (~0.5 s each); a test that reads plots/ sets NNLAB_PLOTS=1 itself
os.environ.setdefault("NNLAB_PLOTS", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NNLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a plain run); xdist's workers inherit it
        start_session()


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        end_session()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op torch thread in the test process: the tests' models are tiny and the machine a small
    shared one, where a second thread spins against the neighbours (a 3-epoch digits LeNet fit: 3.6 s
    with 2 threads, 1.1 s with 1). NumPy's BLAS threads are left as they are."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test with the reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not found (tests that need ../shared/data skip)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for a browser test module (tests/browser.py); pages come from chromium_page."""
    from browser import chromium

    with chromium() as browser:
        yield browser


@pytest.fixture
def cli():
    """`cli("report", run)`: an `nnlab` command in process, returning (returncode, stdout, stderr)."""
    return run_cli


DDP_CONFIG = """
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


@made_once
def _ddp_run_folder() -> Path:
    root = session_root() / "ddp"
    shutil.rmtree(root, ignore_errors=True)  # what a failed try left
    root.mkdir()
    (root / "exp.toml").write_text(DDP_CONFIG)
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "nnlab", "run", str(root / "exp.toml"), "--out", str(root / "run")],
                          capture_output=True, text=True, timeout=540, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (root / "stdout.txt").write_text(proc.stdout)
    (root / "stderr.txt").write_text(proc.stderr)
    return root


@pytest.fixture(scope="session")
def ddp_run() -> tuple[subprocess.CompletedProcess, Path]:
    """`torchrun --nproc_per_node 2 -m nnlab run` (two CPU processes, gloo) of DDP_CONFIG, as a user would
    launch it: the process (its output) and its run directory. Made once per session (`shared_runs`);
    test_ddp and test_gpu_check read it."""
    root = _ddp_run_folder()
    proc = subprocess.CompletedProcess(["torchrun"], 0, (root / "stdout.txt").read_text(),
                                       (root / "stderr.txt").read_text())
    return proc, root / "run"
