"""Fixtures shared by every test folder (unit/, theory/, e2e/); the helpers themselves are in tests/helpers.py."""

from __future__ import annotations

import pytest
import torch

from .helpers import Run, make_config, train_config


@pytest.fixture
def run_train(tmp_path):
    """run_train("mode=augmented", ...) -> Run: the real loop on the composed config."""
    counter = iter(range(1000))

    def _run(*overrides: str) -> Run:
        run_dir = tmp_path / f"run{next(counter)}"
        run_dir.mkdir()
        return Run(run_dir, train_config(make_config(*overrides), run_dir))

    return _run


@pytest.fixture
def one_thread():
    """One torch thread: tests of many tiny ops on a shared 2-core machine mostly wait on each other with two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
