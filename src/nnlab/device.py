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
