"""One data-root rule everywhere: an explicit root (``root=``, ``--data-root``), else
``$FASTNOISE_DATA_ROOT``, else ``~/.cache/fastnoise/data``; and the test session finds the
project's real data (../shared/data) so the real-data tests run instead of skipping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fastnoise.data import DatasetNotFoundError, default_root, load_dataset
from fastnoise.data.loading import ROOT_ENV

from conftest import shared_data_root


def test_explicit_root_then_environment_then_default(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))  # a root without the files
    assert len(load_dataset("mnist", root=data_root, train=False)) == 10_000  # root= wins
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        load_dataset("mnist", train=False)  # no root: the environment's
    monkeypatch.delenv(ROOT_ENV)
    assert default_root() == Path("~/.cache/fastnoise/data").expanduser()


def test_the_session_finds_real_data_without_being_told():
    found = shared_data_root()
    if found is None:
        pytest.skip("no real MNIST here: not in $FASTNOISE_DATA_ROOT, ../shared/data or ~/.cache")
    # What code without a root sees: the CLI run in-process, torchrun workers, subprocesses.
    assert Path(os.environ[ROOT_ENV]) == found
    assert len(load_dataset("fashion-mnist", train=False)) == 10_000
