"""Fixtures shared by every test folder (unit/, theory/, e2e/); the helpers themselves are in tests/helpers.py."""

from __future__ import annotations

import os

import pytest

# torch and the helpers are imported where they are used: under pytest-xdist the controlling process
# loads this file too, and needs neither (3-4 s of the fast subset's minute).


def pytest_configure(config):
    """Under pytest-xdist (the default, pyproject.toml) each worker gets its share of the cores as torch
    threads, and so do the eqtrain processes it starts: two workers of two threads on two cores mostly
    wait on each other."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        threads = max(1, len(os.sched_getaffinity(0)) // int(workers))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


@pytest.fixture
def run_train(tmp_path):
    """run_train("mode=augmented", ...) -> Run: the real loop on the composed config."""
    from .helpers import Run, make_config, train_config

    counter = iter(range(1000))

    def _run(*overrides: str) -> Run:
        run_dir = tmp_path / f"run{next(counter)}"
        run_dir.mkdir()
        return Run(run_dir, train_config(make_config(*overrides), run_dir))

    return _run


@pytest.fixture
def one_thread():
    """One torch thread: tests of many tiny ops on a shared 2-core machine mostly wait on each other with two."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _same_numbers_in_any_order():
    """Every test starts from the same global torch seed, so what it draws does not depend on which tests
    pytest-xdist happened to run before it in the same worker (a contrast that held in one order once fell
    short in another)."""
    import torch

    torch.manual_seed(0)
