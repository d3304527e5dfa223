"""DistributedDataParallel with two CPU processes (gloo), launched by torchrun as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


@pytest.mark.timeout(600)
def test_two_process_gloo_run(ddp_run):
    proc, out = ddp_run
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


def _rank_indices(rank: int, world: int, init_file: str, out: str) -> None:
    """One rank of a gloo group: the store indices its training loader yields in epochs 0..2."""
    from nnlab.config import validate
    from nnlab.datasets.strokes import build_stroke_data

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    cfg = validate({"seed": 5, "data": {"kind": "synth", "classes": 4, "per_class": 40, "image_size": 16,
                                        "batch_size": 8, "val_fraction": 0.1, "test_fraction": 0.1}})
    loader = build_stroke_data(cfg, rank=dist.get_rank(), world=dist.get_world_size()).loaders["train"]
    epochs = []
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        epochs.append(torch.cat([idx for _, _, idx in loader]).tolist())
    ranks = [None] * world
    dist.all_gather_object(ranks, epochs)  # over gloo, as a multi-node run would exchange them
    if rank == 0:
        Path(out).write_text(json.dumps({"ranks": ranks, "train": loader.dataset.indices.tolist(),
                                         "steps": len(loader.sampler)}))
    dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_endless_sampler_shards_ranks_without_repeats_within_an_epoch(tmp_path: Path):
    out = tmp_path / "indices.json"
    mp.spawn(_rank_indices, args=(2, str(tmp_path / "rendezvous"), str(out)), nprocs=2)
    got = json.loads(out.read_text())
    train, steps = set(got["train"]), got["steps"]
    global_batch = 2 * 8
    assert steps == len(train) // global_batch and len(train) % global_batch  # epochs span permutations
    for epoch in range(3):
        union = np.concatenate([got["ranks"][r][epoch] for r in range(2)])
        assert len(union) == steps * global_batch
        assert len(np.unique(union)) == len(union), f"epoch {epoch}: an index repeats across or within ranks"
        assert set(union.tolist()) <= train
    # consecutive epochs: every drawing once before any twice. The run's order is step by step, rank by rank
    stream = np.stack([np.reshape(got["ranks"][r][:2], (2 * steps, 8)) for r in range(2)], axis=1).ravel()
    first_pass = stream[:len(train)]
    assert len(np.unique(first_pass)) == len(train)
