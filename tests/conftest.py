from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_runner import run_cli

os.environ.setdefault("NNLAB_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
# no plots at the end of a fit (~0.5 s each); a test that reads plots/ sets NNLAB_PLOTS=1 itself
os.environ.setdefault("NNLAB_PLOTS", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NNLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test with the reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not found (tests that need ../shared/data skip)")
    return SHARED_DATA


@pytest.fixture
def cli():
    """`cli("report", run)`: an `nnlab` command in process, returning (returncode, stdout, stderr)."""
    return run_cli
