"""Config validation: one useful line naming the key, the file and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnlab.config import load_config, save_config
from nnlab.errors import ConfigError

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
    cfg = load_config(write(tmp_path, BASE), ["optim.lr=0.05", "model.hidden=[32, 16]", "name=other",
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
