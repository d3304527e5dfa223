"""The Python API's seams: `nnlab.study` is the API's function whatever was imported first, the lazy
API is listed by dir(nnlab), and the CLI answers a config error without importing torch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter with this checkout's src/ first: import order and sys.modules are
    what these tests are about, and a pytest process has imported everything already."""
    environ = os.environ | {"PYTHONPATH": str(ROOT / "src"), "NNLAB_PROGRESS": "0"} | (env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=environ, cwd=ROOT)


def test_nnlab_study_is_the_api_function_whatever_was_imported_first():
    orders = ["""
        import nnlab.studies.plan
        import nnlab
        import nnlab.api
        assert callable(nnlab.study), nnlab.study
        assert nnlab.study is nnlab.api.study
        print("ok")
    """, """
        import nnlab
        study = nnlab.study
        import nnlab.studies.plan
        import nnlab.api
        assert nnlab.study is study is nnlab.api.study
        print("ok")
    """]
    with ThreadPoolExecutor(len(orders)) as pool:  # two fresh interpreters at once: each imports torch
        for done in pool.map(run_python, orders):
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
    for name in ("fit", "load_run", "study", "resume", "lr_find", "make_config", "TrainedRun", "NnlabError",
                 "register_model", "Callback", "StopTraining", "Predictions", "StudyResult"):
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


# The real CLI in a fresh interpreter: what a command imports before it answers is the point, and only a
# new process starts with nothing imported. main() ends in SystemExit; the wrapper then reports which
# heavy modules were loaded, on the last line of stdout.
CLI_WRAPPER = """
import sys
import nnlab.cli
sys.argv = ["nnlab", *sys.argv[1:]]
try:
    nnlab.cli.main()
    code = 0
except SystemExit as exc:
    code = exc.code
print("loaded:", " ".join(m for m in ("torch", "timm", "torchvision", "matplotlib", "numba") if m in sys.modules))
sys.exit(code)
"""


def cli_in_fresh_process(*args: str | Path) -> tuple[subprocess.CompletedProcess, list[str], float]:
    """(the finished process, the heavy modules it loaded, its wall-clock seconds)."""
    environ = os.environ | {"PYTHONPATH": str(ROOT / "src"), "NNLAB_PROGRESS": "0"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CLI_WRAPPER, *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=environ, cwd=ROOT)
    seconds = time.perf_counter() - start
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert last.startswith("loaded:"), done.stdout + done.stderr
    return done, last.removeprefix("loaded:").split(), seconds


@pytest.mark.parametrize("command", [["run"], ["study"], ["lr-find"], ["summary"]])
def test_a_config_typo_answers_in_one_line_without_importing_torch(tmp_path, command):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "typo"\n[trian]\nepochs = 1\n')
    done, loaded, seconds = cli_in_fresh_process(*command, bad)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {bad}: trian: unknown key; did you mean 'train'? "
                                                "(allowed: data, engine, eval, loss, model, name, optim, schedule, "
                                                "seed, study, train)"]
    assert "torch" not in loaded and "timm" not in loaded
    # about 0.5 s on a quiet laptop against 7-8 s with torch; the bound leaves room for a loaded machine
    assert seconds < 5, f"{command[0]} took {seconds:.1f} s to reject a typo"


def test_a_typo_in_set_or_grid_answers_before_torch(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('name = "ok"\n[data]\nkind = "digits"\n')
    done, loaded, _ = cli_in_fresh_process("run", good, "--set", "optim.lrr=0.1")
    assert done.returncode == 2 and "optim.lrr: unknown key" in done.stderr and "torch" not in loaded
    done, loaded, _ = cli_in_fresh_process("study", good, "--grid", "fast=optim.lrr=0.1")
    assert done.returncode == 2 and "study.grid.fast: optim.lrr: unknown key" in done.stderr
    assert "torch" not in loaded
    done, loaded, _ = cli_in_fresh_process("resume", tmp_path)
    assert done.returncode == 2 and "not a run directory" in done.stderr and "torch" not in loaded


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    import nnlab

    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NNLAB_PLOTS", "0")
        return nnlab.fit(TINY_DIGITS, out=root / "tiny", echo=False).path


@pytest.mark.parametrize("command", ["runs", "report", "compare"])
def test_commands_that_read_runs_do_not_load_torch(finished_run, command):
    target = finished_run.parent if command == "runs" else finished_run
    done, loaded, _ = cli_in_fresh_process(command, target)
    assert done.returncode == 0, done.stderr
    assert "tiny" in done.stdout
    assert "torch" not in loaded and "timm" not in loaded and "torchvision" not in loaded


@pytest.mark.parametrize("command", [["--help"], ["runs", "--help"], ["report", "--help"], ["compare", "--help"],
                                     ["embed", "--help"], ["gallery", "--help"], ["gallery", "build", "--help"],
                                     ["identify", "--help"], ["data", "--help"]])
def test_help_loads_no_heavy_module(command):
    done, loaded, _ = cli_in_fresh_process(*command)
    assert done.returncode == 0 and "Usage" in done.stdout, done.stderr
    assert loaded == []


def test_every_lazy_api_name_is_in___all___and_resolves():
    import nnlab
    from nnlab.models.registry import register_model
    from nnlab.training.callbacks import Callback, StopTraining

    assert set(nnlab.API) <= set(nnlab.__all__) <= set(dir(nnlab))
    assert all(getattr(nnlab, name) is not None for name in nnlab.__all__)
    assert (nnlab.register_model, nnlab.Callback, nnlab.StopTraining) == (register_model, Callback, StopTraining)
