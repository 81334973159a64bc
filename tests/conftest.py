"""Fixtures shared by every test folder (unit/, theory/, e2e/); the helpers themselves are in tests/helpers.py."""

from __future__ import annotations

import pytest

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
