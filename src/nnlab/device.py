"""Where and how torch computes: the device, DDP membership, mixed precision and every random
generator's state. The leaf every torch stage (datasets, training, evaluation, inference) may import."""

from __future__ import annotations

import os
import pickle
import platform
import random
import shutil
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from nnlab.config import ExperimentConfig
from nnlab.errors import ModelError, NnlabError


@dataclass
class Dist:
    """Where this process stands in a (possibly single-process) distributed run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Join the torchrun process group when launched by torchrun (nccl on GPU, gloo on CPU), also with
    one process (`--nproc_per_node 1` then runs the same collectives as a bigger run)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return Dist()
    if device.startswith("cuda"):
        torch.cuda.set_device(device)  # nccl talks to the current device: this rank's own GPU
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(choice: str, local_rank: int = 0) -> str:
    if choice == "cuda" and not torch.cuda.is_available():
        raise NnlabError("train.device = 'cuda' but no CUDA device is available")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return f"cuda:{local_rank}"
    return "cpu"


def seed_everything(seed: int) -> None:
    """One seed drives Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": _numpy_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> tuple:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return kind, keys.tolist(), int(pos), int(has_gauss), float(cached)  # plain types: weights_only loading



def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model



def prepare_model(model: nn.Module, device: str, channels_last: bool = False, compile: bool = False,
                  compile_mode: str = "default") -> nn.Module:
    """The model on `device`, in NHWC layout with `channels_last` (4-D weights only) and compiled in
    place with `compile`: `nn.Module.compile` keeps the module and its state_dict keys, so
    checkpoints, DDP and export see the plain model."""
    model = model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    if compile:
        check_compile(device)
        model.compile(mode=compile_mode)
    return model


def input_layout(x: torch.Tensor, channels_last: bool) -> torch.memory_format:
    """The memory format a batch goes to the model in: NHWC for images with `channels_last`, as
    `prepare_model` lays out the weights; anything not 4-D (point sequences) stays as it is."""
    return torch.channels_last if channels_last and x.dim() == 4 else torch.preserve_format


def check_compile(device: str) -> None:
    """Raise a one-line NnlabError where torch.compile cannot work (checked before the first step, which
    is where its own errors would come, deep in a traceback)."""
    import torch._dynamo  # heavy: only when train.compile is set

    fix = "set train.compile = false"
    if not torch._dynamo.is_dynamo_supported():
        raise NnlabError(f"train.compile: torch.compile does not support Python {platform.python_version()} "
                         f"with torch {torch.__version__} on {sys.platform}; {fix}")
    if device.startswith("cuda"):
        from torch.utils._triton import has_triton  # heavy: only when train.compile is set

        if not has_triton():
            raise NnlabError(f"train.compile on CUDA needs triton (pip install triton); {fix}")
    elif not any(shutil.which(c) for c in (os.environ.get("CXX") or "g++", "clang++", "c++")):
        raise NnlabError(f"train.compile on the CPU needs a C++ compiler (g++ or clang++ on PATH, or CXX); {fix}")


def autocast(device: str, amp: str):
    """bf16/fp16 autocast on CUDA ('auto' = bf16 where supported); full precision on the CPU."""
    if not device.startswith("cuda") or amp == "off":
        return nullcontext()
    dtype = torch.float16 if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()) else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)



def gather_split(loader, rows: np.ndarray) -> np.ndarray:
    """Rows of a whole eval split in order: under DDP each rank holds a strided shard, interleaved back."""
    if not dist.is_initialized():
        return rows
    pieces = [None] * dist.get_world_size()
    dist.all_gather_object(pieces, rows)
    full = np.zeros((loader.sampler.size, pieces[0].shape[1]), dtype=np.float32)
    for r, piece in enumerate(pieces):
        full[r::dist.get_world_size()] = piece
    return full



def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def load_torch_file(path: Path, others: Sequence[Path] = ()) -> Any:
    """torch.load of a checkpoint or weights file, plain tensors and containers only
    (`weights_only`): a file holding code is refused for safety, and an empty, truncated or
    otherwise unreadable file is a ModelError naming it and the `others` that could be used instead."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc) or "allowlist" in str(exc):  # a function or class to call
            raise ModelError(f"{path}: not a plain weights file (it holds code or Python objects); refused for "
                             "safety") from None
        reason = "not a torch file, or cut short"
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, IndexError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120] or type(exc).__name__
    usable = [p.name for p in others if Path(p).is_file() and Path(p) != path]
    alt = f"; other checkpoints there: {', '.join(usable)}" if usable else "; no other checkpoint there"
    size = path.stat().st_size
    raise ModelError(f"{path}: the checkpoint is damaged ({'empty file' if size == 0 else reason}){alt}")


# --------------------------------------------------------------------------- CPU threads


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask: a container's or `taskset`'s share), not the
    machine's count that `os.cpu_count()` gives."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows: no affinity API
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadPlan:
    """How a training process uses the CPUs: intra-op torch threads and BLAS threads of the main process,
    DataLoader worker processes (one thread each), and whether the plan oversubscribes the cores."""

    cores: int
    torch_threads: int
    blas_threads: int
    workers: int
    chosen: bool  # True when torch threads were picked here, False when the config set them
    oversubscribed: bool

    def note(self) -> str:
        """The one-time line a run prints about its threads."""
        workers = f", {self.workers} loader worker{'s' if self.workers != 1 else ''} x 1 thread" if self.workers else ""
        how = "chosen to fit" if self.chosen else "as configured"
        text = (f"note: CPU threads: torch {self.torch_threads}, BLAS {self.blas_threads}{workers} on "
                f"{self.cores} usable core{'s' if self.cores != 1 else ''} ({how})")
        if self.oversubscribed:
            text += (f"; {self.torch_threads + self.workers} busy threads on {self.cores} cores oversubscribe "
                     "them and slow every step (leave train.threads unset, or lower data.num_workers)")
        return text


def choose_threads(cores: int | None = None, workers_wanted: int | None = None, threads_wanted: int | None = None,
                   blas_wanted: int | None = None, render_bound: bool = False, cap: int | None = None) -> ThreadPlan:
    """Threads that fit the machine. The rule: **torch_threads + workers <= cores**, where `cores` is the
    affinity mask's size (`usable_cores`), each DataLoader worker runs one torch and one BLAS thread
    (`single_thread_worker`), and the main process runs `torch_threads` intra-op threads with its
    BLAS capped at the same number. So the busy threads never outnumber the cores when the choice is ours,
    except for the one main thread left when the workers alone take every core (it mostly waits for them).

    - workers: `workers_wanted` when given (the config's `data.num_workers` always wins); when None,
      `cores - 1` if `render_bound` (drawings render in the workers: they get the cores first), else 0.
    - torch threads: `threads_wanted` (the config's `train.threads`) when given; else
      `max(1, cores - workers)`, and never more than `cap` (a limit the caller already set: OMP_NUM_THREADS,
      or `torch.set_num_threads` in a notebook or test).
    - BLAS threads: `blas_wanted` when given, else the torch threads.
    An explicit setting that makes `torch_threads + workers > cores` is kept, flagged `oversubscribed`
    (the run then says so once)."""
    cores = max(1, cores or usable_cores())
    if workers_wanted is None:
        workers = cores - 1 if render_bound and cores > 1 else 0
    else:
        workers = max(0, workers_wanted)
    chosen = threads_wanted is None
    if chosen:
        torch_threads = max(1, cores - workers)
        if cap is not None:
            torch_threads = max(1, min(torch_threads, cap))
    else:
        torch_threads = max(1, threads_wanted)
    blas = max(1, blas_wanted) if blas_wanted else torch_threads
    busy = torch_threads + workers
    # one busy thread over the cores is the floor (a main thread beside as many workers as cores)
    oversubscribed = busy > cores and not (torch_threads == 1 and workers <= cores)
    return ThreadPlan(cores, torch_threads, blas, workers, chosen, oversubscribed)


_THREADS = {"set": None, "cap": None}  # torch threads nnlab set last; the caller's own limit seen last


def caller_thread_cap() -> int | None:
    """A torch thread limit set outside nnlab (OMP_NUM_THREADS, torch's start-up default, or
    `torch.set_num_threads` by the caller since nnlab last set it), which an automatic choice keeps to."""
    current = torch.get_num_threads()
    if current != _THREADS["set"]:  # not ours: the start-up default, or the caller changed it since
        _THREADS["cap"] = current
    env = os.environ.get("OMP_NUM_THREADS", "")
    caps = [c for c in (_THREADS["cap"], int(env) if env.isdigit() and int(env) > 0 else None) if c]
    return min(caps) if caps else None


def thread_plan(cfg: ExperimentConfig, world: int = 1, cores: int | None = None) -> ThreadPlan:
    """`choose_threads` for a config: `train.threads` and `data.num_workers` as set, the cores shared by the
    `world` processes of a CPU DDP run on this machine."""
    cores = max(1, (cores or usable_cores()) // max(1, world))
    return choose_threads(cores, cfg.data.num_workers, cfg.train.threads,
                          render_bound=getattr(cfg.data, "modality", "images") == "drawings",
                          cap=caller_thread_cap())


def apply_threads(plan: ThreadPlan) -> None:
    """Set this process's torch and BLAS threads to the plan (process-wide, as torch's setting is)."""
    torch.set_num_threads(plan.torch_threads)
    _THREADS["set"] = plan.torch_threads
    from threadpoolctl import threadpool_limits  # small; the BLAS pools of NumPy/SciPy in this process

    threadpool_limits(limits=plan.blas_threads, user_api="blas")


def single_thread_worker(_worker_id: int) -> None:
    """DataLoader `worker_init_fn`: one torch and one BLAS thread per worker process, the `choose_threads`
    rule's assumption (torch sets its own to 1 in workers, a BLAS pool would take every core in each; the
    numba renderer is serial, so numba's pool is never started)."""
    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits  # small; only in worker processes

    threadpool_limits(limits=1)
