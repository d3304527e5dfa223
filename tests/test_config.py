"""Config validation: one useful line naming the key, the file and what is allowed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w

import nnlab
from nnlab.cli import main
from nnlab.config import DATA_KINDS, load_config, save_config, validate
from nnlab.errors import ConfigError, DataError, TrainingError
from nnlab.runs.run import Run
from nnlab.training import resources
from nnlab.training.resources import check_resources

BASE = """
name = "t"
[data]
kind = "digits"
[train]
epochs = 2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def test_misspelt_key_names_key_file_and_suggestion(tmp_path):
    path = write(tmp_path, BASE + "batch_sise = 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "train.batch_sise" in message and "unknown key" in message
    assert "\n" not in message


def test_misspelt_key_in_data_section_suggests_the_right_one(tmp_path):
    path = write(tmp_path, BASE.replace('kind = "digits"', 'kind = "digits"\nbatch_sise = 3'))
    message = str(pytest.raises(ConfigError, load_config, path).value)
    assert "data.batch_sise" in message and "did you mean 'batch_size'" in message


def test_wrong_type_and_out_of_range(tmp_path):
    message = str(pytest.raises(ConfigError, load_config, write(tmp_path, BASE.replace("epochs = 2", 'epochs = "ten"'))).value)
    assert "train.epochs" in message and "'ten'" in message
    message = str(pytest.raises(ConfigError, load_config, write(tmp_path, BASE.replace("epochs = 2", "epochs = 0"))).value)
    assert "train.epochs" in message and "greater than or equal to 1" in message


def test_literal_lists_allowed_values(tmp_path):
    message = str(pytest.raises(ConfigError, load_config, write(tmp_path, BASE + "[optim]\nname = 'adamax'\n")).value)
    assert "optim.name" in message and "'sgd'" in message and "'adamw'" in message


def test_unknown_main_metric(tmp_path):
    message = str(pytest.raises(ConfigError, load_config, write(tmp_path, BASE + "[eval]\nmain_metric = 'acc'\n")).value)
    assert "eval.main_metric" in message and "accuracy" in message


def test_overrides_are_typed_and_validated(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["optim.lr=0.05", "model.name=mlp", "model.hidden=[32, 16]", "name=other",
                                              "data.kind=npz"])
    assert cfg.optim.lr == 0.05 and cfg.model.hidden == [32, 16] and cfg.name == "other" and cfg.data.kind == "npz"
    with pytest.raises(ConfigError, match="optim.lrr"):
        load_config(write(tmp_path, BASE), ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(write(tmp_path, BASE), ["optim.lr"])


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "name = \n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["optim.lr=0.02"])
    save_config(cfg, tmp_path / "resolved.toml")
    assert load_config(tmp_path / "resolved.toml") == cfg


@pytest.mark.parametrize("text, expected", [
    (BASE + "[train]\n", "not valid TOML"),  # a duplicated table
    (BASE + "[modle]\nname = 'x'\n", "modle: unknown key"),
    (BASE.replace('kind = "digits"', 'kind = "npz"\npath = "does/not/exist.npz"'), "does/not/exist.npz"),
])
def test_cli_prints_one_line_and_exits_2(tmp_path, text, expected, cli):
    path = write(tmp_path, text)
    proc = cli("run", path, "--out", tmp_path / "run", ok=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr


def test_overrides_never_change_the_callers_base_dict():
    base = {"data": {"kind": "digits"}, "train": {"epochs": 2}}
    cfg = load_config(None, ["data.batch_size=4", "train.epochs=3"], base=base)
    assert cfg.data.batch_size == 4 and cfg.train.epochs == 3
    assert base == {"data": {"kind": "digits"}, "train": {"epochs": 2}}


# --------------------------------------------------------------------------- one class per kind, strict


def error_of(raw: dict, source: str = "t.toml") -> str:
    return str(pytest.raises(ConfigError, validate, raw, source).value)


def test_unknown_kind_suggests_the_closest():
    message = error_of({"data": {"kind": "foldr", "path": "x"}})
    assert message == ("t.toml: data.kind: unknown kind 'foldr'; did you mean 'folder'? "
                       "(known: digits, idx, npz, folder, bitmap, csv, strokes, synth)")


def test_an_option_of_another_kind_names_the_kinds_it_belongs_to():
    message = error_of({"data": {"kind": "folder", "path": "x", "encoding": "binary"}})
    assert message == "t.toml: data.encoding: not an option of kind 'folder' (it belongs to kinds: strokes, synth)"
    assert "data.images_key: not an option of kind 'strokes' (it belongs to kinds: npz)" in error_of(
        {"data": {"kind": "strokes", "images_key": "x"}})
    # an option of no kind at all is a misspelling: the hint lists this kind's options
    message = error_of({"data": {"kind": "npz", "labels_kee": "y"}})
    assert "data.labels_kee: unknown key; did you mean 'labels_key'?" in message and "images_key" in message
    assert "encoding" not in message


def test_an_option_of_another_model_family_is_refused_with_the_family_options():
    message = error_of({"model": {"name": "lenet", "rnn_layers": 2}})
    assert message.startswith("t.toml: model.rnn_layers: not an option of model 'lenet' (it belongs to "
                              "stroke_rnn/stroke_gru; lenet* takes: ")
    assert "embedding_dim" in message and "hidden" not in message
    assert "model.hidden: not an option of model 'timm:resnet18'" in error_of(
        {"model": {"name": "timm:resnet18", "hidden": [8]}})
    cfg = validate({"model": {"name": "mlp", "hidden": [8], "dropout": 0.1, "embedding_dim": 16}})
    assert cfg.model.hidden == [8] and cfg.model.embedding_dim == 16


def test_every_problem_of_a_file_is_reported_each_on_its_line_with_its_key(tmp_path):
    path = write(tmp_path, """
[data]
kind = "folder"
path = "x"
flip = 0.5
batch_size = 0
[model]
name = "lenet"
hidden = [4]
[train]
epochs = "ten"
[optim]
lrr = 0.1
""")
    lines = str(pytest.raises(ConfigError, load_config, path).value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)
    keys = sorted(line.removeprefix(f"{path}: ").split(":")[0] for line in lines)
    assert keys == ["data.batch_size", "data.flip", "model.hidden", "optim.lrr", "train.epochs"]


def test_the_cli_prints_every_problem_and_exits_2(tmp_path):
    path = write(tmp_path, BASE.replace('kind = "digits"', 'kind = "digits"\nencoding = "binary"\nbatch_size = 0'))
    proc = subprocess.run([sys.executable, "-m", "nnlab", "run", str(path), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 2 and lines[0].startswith(f"error: {path}: "), proc.stderr
    assert "data.encoding" in proc.stderr and "data.batch_size" in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("data, says", [
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "data.val_fraction + data.test_fraction must be < 1, got 0.5 + 0.5"),
    ({"kind": "strokes", "path": "s", "val_fraction": 0.6, "test_fraction": 0.6}, "data.val_fraction + data.test"),
])
def test_split_fractions_must_leave_a_training_split(data, says):
    assert says in error_of({"data": data})


def test_cross_field_problems_are_reported_together():
    message = error_of({"engine": "numpy", "model": {"name": "mlp"}, "train": {"compile": True},
                        "eval": {"main_metric": "map3", "top_k": 5}, "data": {"test_fraction": 0.95}})
    assert len(message.splitlines()) == 3
    assert "train.compile" in message and "eval.top_k = 5" in message and "data.val_fraction" in message


def test_kinds_declare_their_modality():
    assert {kind: cls.modality for kind, cls in DATA_KINDS.items()} == {
        "digits": "images", "idx": "images", "npz": "images", "folder": "images", "bitmap": "images",
        "csv": "images", "strokes": "drawings", "synth": "drawings"}
    assert validate({"data": {"kind": "synth", "input": "sequence"}}).data.input_modality == "sequences"
    assert validate({"data": {"kind": "synth"}}).data.input_modality == "drawings"


def test_switching_kind_or_model_by_override_drops_the_old_ones_options(tmp_path):
    path = write(tmp_path, BASE.replace('kind = "digits"', 'kind = "idx"\ndownload = true\ndataset = "mnist"')
                 + "[model]\nname = 'mlp'\nhidden = [16]\n")
    cfg = load_config(path, ["data.kind=npz", "data.images_key=x", "model.name=lenet_alpha"])
    assert (cfg.data.kind, cfg.data.images_key, cfg.model.name) == ("npz", "x", "lenet_alpha")
    with pytest.raises(ConfigError, match="data.download: not an option of kind 'npz'"):
        load_config(path, ["data.kind=npz", "data.download=true"])  # set after the switch: refused


@pytest.mark.parametrize("overrides", [
    ["data.kind=strokes", "data.path=/s", "data.encoding=binary", "data.line_width=2.0"],
    ["data.kind=csv", "data.path=/c.csv", "data.shape=[8, 8]", "model.name=mlp", "model.hidden=[8]"],
    ["data.kind=folder", "data.path=/f", "model.name=timm:resnet18", "model.head=arcface",
     "model.embedding_dim=32", "data.split=identity"],
])
def test_every_kind_round_trips_without_none_values(tmp_path, overrides):
    cfg = load_config(None, overrides)
    save_config(cfg, tmp_path / "c.toml")
    saved = tomllib.loads((tmp_path / "c.toml").read_text())
    assert "margin" not in saved["model"] and "eval_batch_size" not in saved["data"]  # None: left out
    assert load_config(tmp_path / "c.toml") == cfg


def test_config_errors_are_value_errors():
    assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)
    with pytest.raises(ValueError, match="data.kind"):
        validate({"data": {"kind": "nope"}})


def test_validation_never_looks_at_the_machine():
    # one batch alone is 256 GiB here: valid everywhere, checked only when training starts
    cfg = validate({"data": {"image_size": 1024, "batch_size": 65536}, "model": {"name": "mlp",
                                                                              "hidden": [1_000_000]}})
    assert cfg.data.batch_size == 65536


# --------------------------------------------------------------------------- saved runs


# what the schema before one class per kind wrote in every run's config.toml besides the digits options
OLD_STYLE_DATA = {"download": False, "images_key": "images", "labels_key": "labels", "header": "auto",
                  "on_bad": "error", "split": "stratified", "input": "image", "max_points": 256,
                  "encoding": "time-decay", "padding": 0.0, "per_class": 300, "recognized_only": False, "flip": 0.0}
OLD_STYLE_MODEL = {"pretrained": False, "hidden": [512, 128, 64], "activation": "relu", "batchnorm": True,
                   "conv_filters": [48, 64, 96], "conv_kernels": [5, 5, 3], "rnn_hidden": 128, "rnn_layers": 3}


def _digits_copy(tmp_path: Path, data: dict | None = None, model: dict | None = None) -> Path:
    """A copy of the shared tiny digits LeNet run whose config.toml gets `data` and `model` keys added."""
    from image_models import digits_run

    run = tmp_path / "run"
    shutil.copytree(digits_run(), run)
    raw = tomllib.loads((run / "config.toml").read_text())
    raw["data"] |= data or {}
    raw["model"] |= model or {}
    (run / "config.toml").write_text(tomli_w.dumps(raw))
    return run


def test_a_run_saved_with_every_kinds_options_still_opens_and_predicts(tmp_path):
    run = _digits_copy(tmp_path, OLD_STYLE_DATA, OLD_STYLE_MODEL)
    with pytest.raises(ConfigError, match="data.encoding: not an option of kind 'digits'"):
        load_config(run / "config.toml")  # a user's TOML stays strict
    opened = Run.open(run)
    assert opened.config.data.kind == "digits" and not hasattr(opened.config.data, "encoding")
    assert len(nnlab.load_run(run).predict(np.zeros((2, 8, 8), np.uint8))) == 2


def test_a_run_too_big_for_this_machine_opens_predicts_and_exports(tmp_path, monkeypatch, capsys):
    run = _digits_copy(tmp_path, {"batch_size": 65536, "eval_batch_size": 65536})
    monkeypatch.setattr(resources, "memory_bytes", lambda: 2**20)  # a 1 MiB machine: far too small to train it
    with pytest.raises(TrainingError, match="data.batch_size = 65536"):
        check_resources(Run.open(run).config)
    assert Run.open(run).config.data.batch_size == 65536
    assert len(nnlab.load_run(run).predict(np.zeros((3, 8, 8), np.uint8))) == 3
    monkeypatch.setattr(sys, "argv", ["nnlab", "export", str(run), "--out", str(tmp_path / "onnx")])
    main()  # a user error would exit 2
    assert (tmp_path / "onnx" / "model.onnx").is_file()


def test_training_a_config_too_big_for_this_machine_fails_in_one_line_before_the_run_dir(tmp_path, monkeypatch):
    from nnlab.training import fit

    monkeypatch.setattr(resources, "memory_bytes", lambda: 16 * 2**30)
    cfg = validate({"data": {"image_size": 1024, "batch_size": 65536}, "train": {"epochs": 1}})
    with pytest.raises(TrainingError) as err:
        fit(cfg, out=tmp_path / "run")
    assert str(err.value) == ("data.batch_size = 65536 at data.image_size = 1024: one batch takes 256.0 GiB of "
                              "this machine's 16.0 GiB; lower one of them to train here")
    assert not (tmp_path / "run").exists()
    mlp = validate({"engine": "numpy", "model": {"name": "mlp", "hidden": [1_000_000, 1_000_000]}})
    with pytest.raises(TrainingError, match=r"model.hidden = \[1000000, 1000000\]: about"):
        fit(mlp, out=tmp_path / "mlp")
    assert not (tmp_path / "mlp").exists()
