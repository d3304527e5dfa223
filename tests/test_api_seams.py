"""The Python API's seams: `nnlab.study` is the API's function whatever was imported first, the lazy
API is listed by dir(nnlab), and the CLI answers a config error without importing torch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter with this checkout's src/ first: import order and sys.modules are
    what these tests are about, and a pytest process has imported everything already."""
    environ = os.environ | {"PYTHONPATH": str(ROOT / "src"), "NNLAB_PROGRESS": "0"} | (env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=environ, cwd=ROOT)


def test_nnlab_study_is_the_api_function_whatever_was_imported_first():
    done = run_python("""
        import nnlab.studies.plan
        import nnlab
        import nnlab.api
        assert callable(nnlab.study), nnlab.study
        assert nnlab.study is nnlab.api.study
        print("ok")
    """)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    done = run_python("""
        import nnlab
        study = nnlab.study
        import nnlab.studies.plan
        import nnlab.api
        assert nnlab.study is study is nnlab.api.study
        print("ok")
    """)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_one_class_per_concept_for_a_run():
    import nnlab
    import nnlab.api
    from nnlab.runs.run import Run

    assert nnlab.TrainedRun is nnlab.api.TrainedRun and nnlab.TrainedRun is not Run
    assert not hasattr(nnlab.api, "Run")


def test_dir_lists_the_lazy_api_before_it_is_loaded():
    done = run_python("""
        import sys
        import nnlab
        names = dir(nnlab)
        assert "nnlab.api" not in sys.modules, "dir() must not load the API"
        print(" ".join(names))
    """)
    assert done.returncode == 0, done.stderr
    names = done.stdout.split()
    for name in ("fit", "load_run", "study", "resume", "lr_find", "make_config", "TrainedRun", "NnlabError"):
        assert name in names


TINY_DIGITS = {"name": "tiny-digits", "seed": 0,
               "data": {"kind": "digits", "image_size": 8, "channels": 1, "batch_size": 256},
               "model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 1}}


def pngs(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "plots").glob("*.png"))


def test_nnlab_plots_0_skips_the_plots_of_a_runs_end_and_nothing_else(tmp_path, monkeypatch):
    import nnlab

    monkeypatch.setenv("NNLAB_PLOTS", "0")
    quiet = nnlab.fit(TINY_DIGITS, out=tmp_path / "quiet", echo=False)
    assert pngs(quiet.path) == []
    assert (quiet.path / "metrics.json").is_file() and (quiet.path / "predictions" / "test.csv").is_file()
    assert quiet.plot_history().axes  # a plot asked for is still drawn

    monkeypatch.delenv("NNLAB_PLOTS")  # the default: plots are written
    drawn = nnlab.fit(TINY_DIGITS, out=tmp_path / "drawn", echo=False)
    assert {"history.png", "confusion.png"} <= set(pngs(drawn.path))
    assert drawn.metrics["test"] == quiet.metrics["test"]  # the same run, plots aside
