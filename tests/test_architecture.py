"""The layout's promises, checked on the source: one-way layers, no import cycles (imports inside
functions counted), modules and functions a reader can hold in their head, and torch-free data tools."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "nnlab"
MAX_FILE_LINES = 700
MAX_FUNCTION_LINES = 100

# Each layer may import itself and the layers below it, never one above (cli and serve on top).
LAYERS = [
    ("errors", "version", "schema_errors", "config", "progress", "fileio", "metrics"),
    ("strokes", "scratch"),
    ("ingest",),
    ("store",),
    ("device",),
    ("datasets", "models"),
    ("runs",),
    ("evaluation",),
    ("training",),
    ("inference", "studies"),
    ("cli", "serve", "api", "faces", "__main__", "nnlab"),
]
LEVEL = {name: k for k, names in enumerate(LAYERS) for name in names}
TORCH_FREE = ("strokes", "ingest", "store", "scratch", "errors", "version", "schema_errors", "config", "progress", "fileio")


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(src: Path = SRC) -> dict[str, Path]:
    return {module_name(p, src): p for p in sorted((src / "nnlab").rglob("*.py"))}


def imports_of(path: Path, mod: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of the file, relative ones resolved."""
    out = []
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        nested = getattr(node, "col_offset", 0) > 0
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, nested) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out += [(f"{base}.{a.name}", node.lineno, nested) for a in node.names]
    return out


def module_of(name: str, mods: dict[str, Path]) -> str:
    """The module an imported name lives in (`nnlab.a.b.f` -> `nnlab.a.b`), or "" when it is none of `mods`."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def internal_edges(src: Path = SRC) -> dict[str, set[str]]:
    """nnlab module -> the nnlab modules it imports. A package's __init__ counts as a module: importing
    a package runs it, and it imports what it re-exports."""
    mods = modules(src)
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        targets = set()
        for name, _, _ in imports_of(path, mod):
            name = module_of(name, mods)
            if name and name != mod and name.split(".")[0] == "nnlab":
                targets.add(name)
                parent = name.rpartition(".")[0]
                while parent:  # importing nnlab.a.b runs nnlab.a's __init__ first
                    if parent != mod and not mod.startswith(parent + "."):
                        targets.add(parent)
                    parent = parent.rpartition(".")[0]
        graph[mod] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_cycle_finder_finds_a_cycle_through_a_function_import(tmp_path):
    # The scan itself: a cycle hidden in a function-level import must be reported.
    pkg = tmp_path / "nnlab"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from nnlab.b import y\n")
    (pkg / "b.py").write_text("def f():\n    from nnlab.a.x import g\n")
    assert find_cycles(internal_edges(tmp_path)) == [["nnlab.a.x", "nnlab.b"]]
    (pkg / "b.py").write_text("def f():\n    return 1\n")
    assert find_cycles(internal_edges(tmp_path)) == []


def test_no_import_cycles_counting_imports_inside_functions():
    cycles = find_cycles(internal_edges())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def layer_of(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "nnlab"


def test_dependencies_point_down_the_layers():
    wrong = []
    for mod, targets in internal_edges().items():
        for target in targets:
            if LEVEL[layer_of(target)] > LEVEL[layer_of(mod)]:
                wrong.append(f"{mod} imports {target} (a higher layer)")
    assert not wrong, "\n".join(sorted(wrong))


def test_torch_free_layers_never_import_torch_or_sklearn():
    wrong = []
    for mod, path in modules().items():
        if layer_of(mod) not in TORCH_FREE:
            continue
        for name, line, nested in imports_of(path, mod):
            top = name.split(".")[0]
            sklearn_ok = nested and mod == "nnlab.ingest.images"  # the digits kind loads sklearn's bundled set
            if top in ("torch", "torchvision", "timm") or (top == "sklearn" and not sklearn_ok):
                wrong.append(f"{path.relative_to(SRC)}:{line}: imports {name}")
    assert not wrong, "\n".join(wrong)


def module_imports_at_load(start: str) -> set[str]:
    """The top-level packages of everything importing `start` loads (imports inside functions excluded), and
    its nnlab modules, packages' __init__ included: what a process pays for at start-up."""
    mods, seen, external, todo = modules(), set(), set(), [start]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in mods]
        for name, _, nested in imports_of(mods[mod], mod):
            if nested:
                continue
            if name.split(".")[0] != "nnlab":
                external.add(name.split(".")[0])
                continue
            if name := module_of(name, mods):
                todo.append(name)
    return external | seen


@pytest.mark.parametrize("module, heavy", [
    # each `nnlab serve` worker: an ONNX export needs none of these (about 7 s of CPU and 360 MB per process)
    ("nnlab.serve.app", {"timm", "torchvision", "sklearn", "matplotlib", "scipy", "nnlab.models", "nnlab.runs.plots"}),
    # every command that trains or predicts (`nnlab.api`): timm with a timm model, SciPy with a split or a study,
    # matplotlib with the first plot
    ("nnlab.api", {"timm", "torchvision", "sklearn", "scipy", "matplotlib"}),
])
def test_start_up_loads_no_heavy_dependency_before_it_is_used(module, heavy):
    loaded = module_imports_at_load(module)
    assert "nnlab.config" in loaded and "numpy" in loaded  # the walk follows the imports
    assert not loaded & heavy, f"{module} loads {sorted(loaded & heavy)} at import"


def test_imports_inside_functions_are_only_for_heavy_dependencies_and_say_so():
    wrong = []
    for mod, path in modules().items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for name, line, nested in imports_of(path, mod):
            if nested and "#" not in lines[line - 1]:
                wrong.append(f"{path.relative_to(SRC)}:{line}: {name} imported inside a function without a comment")
    assert not wrong, "\n".join(wrong)


def test_no_module_over_700_lines_and_no_function_over_100():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_FILE_LINES:
            offenders.append(f"{path.relative_to(SRC)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            kernel = any("njit" in ast.unparse(d) for d in node.decorator_list)  # numba hot loops
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES and not kernel:
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.name} is {length} lines")
    assert not offenders, "\n".join(offenders)


# A finder that makes torch (and scikit-learn, which prepare's workers must not need) unimportable.
BLOCK = textwrap.dedent("""
    import sys
    class Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "timm", "sklearn"):
                raise ImportError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, Blocked())
    sys.argv = ["nnlab"] + sys.argv[1:]
    from nnlab.cli import main
    main()
""")


def run_without_torch(*args: str) -> subprocess.CompletedProcess:
    """A fresh interpreter with torch blocked: what it imports is the thing tested."""
    env = dict(os.environ, NNLAB_PROGRESS="0")
    return subprocess.run([sys.executable, "-c", BLOCK, *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_data_prepare_info_and_export_run_with_torch_unimportable(tmp_path):
    from nnlab.ingest.writers import write_csv, write_ndjson
    from nnlab.strokes.synth import synth_drawings

    drawings = synth_drawings(3, 5, seed=0)
    write_ndjson(drawings[:8], tmp_path / "a.ndjson")
    write_csv(drawings[8:], tmp_path / "b.csv")
    probe = run_without_torch("models")
    assert probe.returncode != 0, "the blocker must make torch unimportable"
    prep = run_without_torch("data", "prepare", str(tmp_path / "a.ndjson"), str(tmp_path / "b.csv"),
                             "--out", str(tmp_path / "store"), "--workers", "2")
    assert prep.returncode == 0, prep.stderr
    assert "15 drawings, 3 classes" in prep.stdout
    info = run_without_torch("data", "info", str(tmp_path / "store"))
    assert info.returncode == 0, info.stderr
    assert "drawings 15" in info.stdout
    out = run_without_torch("data", "export", str(tmp_path / "store"), "--format", "ndjson",
                            "--out", str(tmp_path / "back.ndjson"))
    assert out.returncode == 0, out.stderr
    assert len((tmp_path / "back.ndjson").read_text().splitlines()) == 15
