"""Files written by write-then-rename follow the umask as `open` would (not mkstemp's private 0600)."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from nnlab.fileio import atomic_write_text, umask_mode, write_classes
from nnlab.runs.run import atomic_save


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_get_the_mode_open_would_give(tmp_path, umask):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # the reference: what `open` gives under this umask
    assert _mode(atomic_write_text(tmp_path / "metrics.json", "{}")) == _mode(plain) == 0o666 & ~umask
    assert _mode(write_classes(tmp_path / "classes.txt", ["a", "b"])) == _mode(plain)
    assert _mode(atomic_save({"w": torch.zeros(2)}, tmp_path / "last.pt")) == _mode(plain)
    assert not list(tmp_path.glob("*.tmp"))


def test_umask_mode_of_directories(tmp_path, umask):
    made = tmp_path / "made"
    made.mkdir()
    assert umask_mode(directory=True) == _mode(made) == 0o777 & ~umask
    assert os.umask(umask) == umask  # reading the umask left it as it was
