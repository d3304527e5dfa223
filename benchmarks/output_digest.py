"""Digest of every output a refactor must keep byte for byte: prepare/info/export of a stroke store,
the demo run and its predictions, the digits LeNet, faces ArcFace and their ONNX exports.

    python benchmarks/output_digest.py --out digest.json [--work DIR]
    python benchmarks/output_digest.py --compare before.json after.json

Each job runs the real CLI (short settings, one thread, so that it is deterministic) in a fresh
folder; every file it writes is hashed. Fields that measure time (seconds, img/s, dates) are left
out of JSON and CSV files before hashing; checkpoints are hashed tensor by tensor, so that a pickle's
framing cannot hide or fake a difference. The comparison prints one line per file that differs and
`RESULT outputs_identical <0|1>`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NNLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
TIMING = re.compile(r"seconds|_s$|time|per_s|img_s|date|created|started|finished_at|elapsed|duration|wait|"
                    r"host|python|torch_version|commit|path|throughput", re.I)
SKIP_SUFFIXES = {".png", ".log", ".lock"}
SKIP_NAMES = {".lock"}  # the training lock: an empty file

QUICK = ["--set", "train.threads=1"]
JOBS: list[tuple[str, list[list[str]]]] = [
    ("store", [
        ["data", "prepare", "{shared}/quickdraw/simplified/cat.ndjson", "{shared}/quickdraw/simplified/dog.ndjson",
         "{shared}/quickdraw/simplified/apple.ndjson", "--out", "{w}/store", "--workers", "1"],
        ["data", "info", "{w}/store", ">", "{w}/store-info.txt"],
        ["data", "export", "{w}/store", "--format", "csv", "--out", "{w}/store-export.csv"],
        ["data", "export", "{w}/store", "--format", "ndjson", "--out", "{w}/store-export.ndjson"],
    ]),
    ("demo", [
        ["run", "recipes/doodles-demo.toml", "--out", "{w}/demo", "--set", "train.epochs=2",
         "--set", "data.per_class=40", "--set", "data.num_workers=0", *QUICK],
        ["export", "{w}/demo", "--format", "onnx", "--out", "{w}/demo-onnx"],
    ]),
    ("digits", [
        ["run", "recipes/digits-lenet.toml", "--out", "{w}/lenet", "--set", "train.epochs=2", *QUICK],
        ["export", "{w}/lenet", "--format", "onnx", "--out", "{w}/lenet-onnx"],
    ]),
    ("faces", [
        ["run", "recipes/faces-arcface.toml", "--out", "{w}/faces", "--set", "train.epochs=2",
         "--set", "data.path={shared}/faces/orl", *QUICK],
        ["export", "{w}/faces", "--format", "onnx", "--out", "{w}/faces-onnx"],
    ]),
]


def run_jobs(work: Path) -> None:
    env = dict(os.environ, NNLAB_PROGRESS="0", MPLBACKEND="Agg", PYTHONHASHSEED="0")
    for name, steps in JOBS:
        for step in steps:
            args = [a.format(shared=SHARED, w=work) for a in step]
            stdout = None
            if ">" in args:
                i = args.index(">")
                args, stdout = args[:i], Path(args[i + 1])
            print(f"[{name}] nnlab {' '.join(args)}", flush=True)
            done = subprocess.run([sys.executable, "-m", "nnlab", *args], cwd=ROOT, env=env,
                                  capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"[{name}] failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
            if stdout is not None:
                stdout.write_text(done.stdout)
    predict_demo(work, env)


def predict_demo(work: Path, env: dict[str, str]) -> None:
    """The demo run's predictions of the prepared store's drawings (a Kaggle submission)."""
    args = ["predict", str(work / "demo"), str(work / "store-export.csv"), "--out", str(work / "demo-sub.csv")]
    print(f"[predict] nnlab {' '.join(args)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "nnlab", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"[predict] failed:\n{done.stdout}\n{done.stderr}")


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not TIMING.search(k)}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def digest_file(path: Path, work: Path) -> str | None:
    if path.suffix in SKIP_SUFFIXES or path.name in SKIP_NAMES or "tensorboard" in path.parts:
        return None
    data = path.read_bytes().replace(str(work).encode(), b"{work}")  # where the jobs ran is no output
    if path.suffix == ".json":
        try:
            data = json.dumps(_strip(json.loads(data)), sort_keys=True).encode()
        except ValueError:
            pass
    elif path.suffix == ".csv" and path.name == "history.csv":
        rows = list(csv.reader(io.StringIO(data.decode())))
        keep = [i for i, name in enumerate(rows[0]) if not TIMING.search(name)]
        data = "\n".join(",".join(r[i] for i in keep) for r in rows).encode()
    elif path.suffix == ".pt":
        import torch  # heavy: only to read checkpoints tensor by tensor

        state = torch.load(path, map_location="cpu", weights_only=False)
        h = hashlib.sha256()
        _hash_tree(state, h, "")
        return h.hexdigest()
    elif path.suffix == ".txt" and path.name.endswith("-info.txt"):
        data = "\n".join(line for line in data.decode().splitlines() if not TIMING.search(line)).encode()
    return hashlib.sha256(data).hexdigest()


def _hash_tree(obj, h, key: str) -> None:
    import torch  # heavy: only to read checkpoints

    if TIMING.search(key):
        return
    if isinstance(obj, dict):
        for k in sorted(obj, key=str):
            _hash_tree(obj[k], h, str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _hash_tree(v, h, key)
    elif isinstance(obj, torch.Tensor):
        h.update(key.encode() + obj.detach().cpu().contiguous().numpy().tobytes())
    else:
        h.update(f"{key}={obj!r}".encode())


def digest(work: Path) -> dict[str, str]:
    out = {}
    for path in sorted(work.rglob("*")):
        if path.is_file():
            value = digest_file(path, work)
            if value is not None:
                out[str(path.relative_to(work))] = value
    return out


def compare(before: Path, after: Path) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    differ = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    for k in differ:
        state = "only before" if k not in b else "only after" if k not in a else "differs"
        print(f"{state:12s} {k}")
    print(f"{len(a)} files before, {len(b)} after, {len(differ)} differ")
    print(f"RESULT outputs_identical {int(not differ)}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="digest JSON to write")
    p.add_argument("--work", type=Path, help="folder for the outputs (default: a temporary one)")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    p.add_argument("--rehash", action="store_true", help="hash the outputs already in --work, without running")
    args = p.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.rehash:
        args.out.write_text(json.dumps(digest(args.work), indent=1, sort_keys=True))
        return 0
    if not args.out:
        p.error("--out or --compare is required")
    if not SHARED.is_dir():
        sys.exit(f"{SHARED}: the shared data folder is needed (set NNLAB_SHARED_DATA)")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        run_jobs(work)
        result = digest(work)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True))
    print(f"{len(result)} files digested -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
