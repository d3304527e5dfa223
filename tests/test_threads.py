"""CPU threads that fit the machine (`device.choose_threads`): the rule torch_threads + workers <= cores on
fake core counts (the affinity mask monkeypatched), explicit settings winning with a warning, the workers'
one thread each, and what a run records and says."""

from __future__ import annotations

import json
import os

import pytest
import torch

from nnlab import device
from nnlab.device import choose_threads, single_thread_worker, thread_plan, usable_cores


@pytest.mark.parametrize("cores", [1, 2, 4, 8, 16, 64])
@pytest.mark.parametrize("workers", [None, 0, 1, 3])
@pytest.mark.parametrize("render_bound", [False, True])
def test_the_automatic_choice_never_oversubscribes(monkeypatch, cores, workers, render_bound):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert usable_cores() == cores
    plan = choose_threads(workers_wanted=workers, render_bound=render_bound)
    assert plan.cores == cores and plan.chosen
    if workers is not None:
        assert plan.workers == workers  # the config's workers always win
    if plan.workers < cores:
        assert plan.torch_threads + plan.workers == cores  # every core used, none twice
    else:
        assert plan.torch_threads == 1  # the one main thread beside workers that take every core
    assert plan.blas_threads == plan.torch_threads
    assert plan.oversubscribed == (plan.workers > cores)


def test_workers_get_the_cores_first_when_rendering_is_the_bottleneck():
    assert choose_threads(8, None, render_bound=True) == choose_threads(8, 7)
    assert choose_threads(8, None, render_bound=True).torch_threads == 1
    assert choose_threads(8, None, render_bound=False).workers == 0
    assert choose_threads(8, None, render_bound=False).torch_threads == 8
    assert choose_threads(1, None, render_bound=True).workers == 0  # one core: render in the main process


def test_the_issue_case_two_cores_two_workers_gets_one_torch_thread():
    plan = choose_threads(2, 2)  # the Quick, Draw! CPU hint: torch's default 2 threads + 2 workers ran at 86 img/s
    assert (plan.torch_threads, plan.workers, plan.oversubscribed) == (1, 2, False)


def test_explicit_threads_win_and_are_flagged_when_they_oversubscribe():
    plan = choose_threads(4, 2, threads_wanted=4)
    assert (plan.torch_threads, plan.workers, plan.chosen, plan.oversubscribed) == (4, 2, False, True)
    assert "oversubscribe" in plan.note() and "as configured" in plan.note()
    fits = choose_threads(4, 2, threads_wanted=2)
    assert not fits.oversubscribed and "oversubscribe" not in fits.note()
    assert choose_threads(4, 0, threads_wanted=1, blas_wanted=3).blas_threads == 3


def test_a_limit_the_caller_set_caps_the_automatic_choice(monkeypatch):
    assert choose_threads(8, 0, cap=1).torch_threads == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    monkeypatch.setattr(device, "_THREADS", {"set": None, "cap": None})
    assert device.caller_thread_cap() == 3


def test_thread_plan_shares_the_cores_between_ddp_processes():
    from nnlab.config import validate

    cfg = validate({"name": "t", "data": {"kind": "digits", "num_workers": 1}, "train": {}}, "t")
    assert thread_plan(cfg, world=2, cores=8).cores == 4
    plan = thread_plan(cfg, world=1, cores=8)
    assert plan.workers == 1 and plan.torch_threads <= 7


def test_a_worker_runs_one_thread_of_each_pool():
    import threadpoolctl

    before = torch.get_num_threads()
    try:
        with threadpoolctl.threadpool_limits(limits=None):
            single_thread_worker(0)
            assert torch.get_num_threads() == 1
            assert all(p["num_threads"] == 1 for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
    finally:
        torch.set_num_threads(before)


def test_a_run_records_its_threads():
    from image_models import digits_run  # the session's shared digits run

    threads = json.loads((digits_run() / "env.json").read_text())["threads"]
    assert threads["torch_threads"] + threads["workers"] <= threads["cores"]
    assert threads["torch_threads"] == 1  # the test process's one thread (conftest) caps the choice
    assert threads["chosen"] and not threads["oversubscribed"]


def test_the_note_says_what_was_chosen():
    assert choose_threads(2, 2).note() == ("note: CPU threads: torch 1, BLAS 1, 2 loader workers x 1 thread on 2 "
                                           "usable cores (chosen to fit)")
