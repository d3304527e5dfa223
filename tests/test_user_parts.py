"""Your own model, data and callbacks from Python (docs/python-api.md): the doc's example runs as written
(fit with a builder, arrays and a callback, resume, predict, export), a run trained with a user module
reloads by its import path after the registry forgot it, a torch Dataset trains, and what cannot be
imported is one clear error."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import nnlab
from nnlab.errors import NnlabError
from nnlab.models import registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def doc_example() -> str:
    section = DOC.read_text().split("## Your own model, data and callbacks", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_docs_example_trains_resumes_predicts_and_exports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope = {"__name__": "__main__"}  # as in a notebook or a script
    exec(compile(doc_example(), str(DOC), "exec"), scope)  # noqa: S102  (the documentation's own code)
    run = scope["run"]
    printed = capsys.readouterr().out
    assert run.config.model.name == "__main__:tiny_cnn"  # recorded in config.toml by its import path
    assert len(run.history) == 3 and json.loads((run.path / "metrics.json").read_text())["epochs"] == 3
    assert run.classes == [f"digit {d}" for d in range(10)]
    assert (run.path / "data.npz").is_file() and json.loads((run.path / "splits.json").read_text())["size"] == 1797
    assert run.metrics["data"]["sizes"] == {"train": 1400, "val": 397, "test": 0}
    assert scope["Stopper"] and len(printed.splitlines()) == 1 and "digit" in printed
    labels = run.predict(scope["X"][-50:]).labels
    assert np.mean([lab == f"digit {t}" for lab, t in zip(labels, scope["y"][-50:], strict=True)]) > 0.5
    from nnlab.inference.models.image import load_image_model

    onnx = load_image_model(tmp_path / "runs" / "mine-onnx")
    probs = onnx.probabilities(list(scope["X"][-3:]))
    assert np.allclose(probs, run.predict(scope["X"][-3:]).probs, atol=1e-4)  # the export answers as the run

    # another process has no tiny_cnn in __main__: one clear error, not a traceback from importlib
    registry._REGISTRY.pop("__main__:tiny_cnn")
    with pytest.raises(NnlabError, match=r"cannot import the model's builder.*defined in __main__"):
        nnlab.load_run(run.path).predict(scope["X"][-3:])


MODULE = '''
from torch import nn

def flat(in_chans, num_classes, image_size, dropout=0.0):
    """A linear model of the pixels."""
    return nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_chans * image_size ** 2, num_classes))

class Net(nn.Module):
    def __init__(self, num_classes=3, image_size=6):
        super().__init__()
        self.fc = nn.Linear(image_size * image_size, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))
'''

CONFIG = {"name": "own", "seed": 0, "data": {"image_size": 6, "batch_size": 32}, "optim": {"lr": 0.05},
          "train": {"epochs": 1}}


def three_blobs(n: int = 240) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    x = rng.uniform(0, 0.3, size=(n, 1, 6, 6)).astype(np.float32)  # channels first, 0..1 floats
    for k in range(3):
        x[y == k, 0, 2 * k:2 * k + 2, :] += 0.7
    return x, y


def test_user_modules_reload_by_import_path_and_a_dataset_trains(tmp_path, monkeypatch):
    (tmp_path / "usermods_i28.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    import usermods_i28

    x, y = three_blobs()
    data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    data.classes = ["top", "middle", "bottom"]
    built = nnlab.fit(CONFIG, model=usermods_i28.flat, train_data=data, out=tmp_path / "flat", echo=False)
    instance = nnlab.fit(CONFIG, model=usermods_i28.Net(), train_data=(x, y), out=tmp_path / "net", echo=False)
    assert built.config.model.name == "usermods_i28:flat" and instance.config.model.name == "usermods_i28:Net"
    assert sorted(built.classes) == ["bottom", "middle", "top"]
    expected = [built.predict(x[:20]).labels, instance.predict(x[:20]).labels]
    assert np.mean([lab == ["top", "middle", "bottom"][t] for lab, t in zip(expected[0], y[:20], strict=True)]) > 0.8

    # as in a fresh process: neither the registry nor the module is loaded; the import path rebuilds both
    for name in ("usermods_i28:flat", "usermods_i28:Net"):
        registry._REGISTRY.pop(name)
    sys.modules.pop("usermods_i28")
    assert [nnlab.load_run(r.path).predict(x[:20]).labels for r in (built, instance)] == expected
    resumed = nnlab.resume(built, epochs=2, echo=False)
    assert len(resumed.history) == 2

    # a module that cannot be imported: one line saying what to do
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    registry._REGISTRY.pop("usermods_i28:flat", None)
    sys.modules.pop("usermods_i28", None)
    with pytest.raises(NnlabError, match=r"'usermods_i28:flat': cannot import .*ModuleNotFoundError.*PYTHONPATH"):
        nnlab.load_run(built.path).predict(x[:2])


def test_bad_user_inputs_are_one_clear_error(tmp_path):
    x, y = three_blobs(30)
    with pytest.raises(NnlabError, match="pixel values must lie in 0..255"):
        nnlab.fit(CONFIG, train_data=(x - 0.5, y), out=tmp_path / "a", echo=False)  # normalised already
    with pytest.raises(NnlabError, match="30 images but labels of shape"):
        nnlab.fit(CONFIG, train_data=(x, y[:10]), out=tmp_path / "b", echo=False)
    with pytest.raises(NnlabError, match="val_data or test_data without train_data"):
        nnlab.fit(CONFIG, val_data=(x, y), out=tmp_path / "c", echo=False)
    with pytest.raises(NnlabError, match="not an nnlab.Callback"):
        nnlab.fit(CONFIG, train_data=(x, y), callbacks=[object()], out=tmp_path / "d", echo=False)
    assert not any(tmp_path.iterdir())  # nothing was left behind
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    with pytest.raises(NnlabError, match="overwrite: not a run directory"):
        nnlab.fit(CONFIG, train_data=(x, y), out=mine, overwrite=True, echo=False)
    assert (mine / "notes.txt").read_text() == "a user's file"  # overwrite replaces runs only
