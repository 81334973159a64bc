"""Shared test helpers: compose the real config, run the real loop or the real command line, read curves.

One copy of each: ``make_config`` (Hydra's compose API, as the CLI composes), ``train_config`` (the
real loop on a composed config), ``Run`` (a finished run directory), ``scalars`` (TensorBoard's own
reader, every step), ``eqtrain`` (the installed command in a subprocess) and ``cli`` (the command
line in-process: fast, no new interpreter).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from eqtrain.cli.train import settings_of
from eqtrain.training.loop import train

BIN = Path(sys.executable).parent
EQTRAIN = str(BIN / "eqtrain")

# A quick digits budget for the end-to-end tests (28x28 images, as in SPEC §6).
TINY = ("dataset.train_limit=100", "dataset.test_limit=50", "epochs=1")
SMOKE = ("experiment=smoke",)


def fast_first(cases, fast: int = 1, ids=None) -> list:
    """Parametrize cases of which the first ``fast`` run in ``pytest -m "not slow"``; all run in the whole suite."""
    cases = list(cases)
    ids = ids or [None] * len(cases)
    return [
        pytest.param(*(c if isinstance(c, tuple) else (c,)), id=i, marks=() if n < fast else pytest.mark.slow)
        for n, (c, i) in enumerate(zip(cases, ids))
    ]


def make_config(*overrides: str):
    with initialize_config_module(config_module="eqtrain.configs", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def train_config(cfg, run_dir: Path) -> dict:
    """The real loop on a composed config, validated at the edge as the CLI does."""
    return train(settings_of(cfg), run_dir)


def scalars(run_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    """Every scalar of a run directory: tag -> (steps, values), with TensorBoard's reader and no sampling."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {
        tag: ([e.step for e in acc.Scalars(tag)], [e.value for e in acc.Scalars(tag)]) for tag in acc.Tags()["scalars"]
    }


class Run:
    """A finished run directory and the result ``train`` returned."""

    def __init__(self, run_dir: Path, result: dict | None = None) -> None:
        self.dir, self.result = Path(run_dir), result

    def weights(self) -> list[torch.Tensor]:
        return torch.load(self.dir / "weights.pt", weights_only=True)["weights"]

    def scalars(self, tag: str) -> tuple[list[int], list[float]]:
        return scalars(self.dir)[tag]

    def metrics(self) -> dict:
        return json.loads((self.dir / "metrics.json").read_text())


def sweep(tmp_path: Path, *args: str, timeout: float = 240) -> list[dict]:
    """``eqtrain -m ARGS`` into ``tmp_path/sweep`` (it must succeed); every run's metrics.json, sorted by path."""
    proc = subprocess.run(
        [EQTRAIN, "-m", *args, f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").rglob("metrics.json"))]


def eqtrain(cwd: Path, *args: str, timeout: float = 180, tool: str = "eqtrain") -> subprocess.CompletedProcess:
    """An installed command (``eqtrain``, ``eqtrain-plot``, ...) in a subprocess, as a user runs it."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([str(BIN / tool), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def cli(tmp_path: Path, monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The real command line in-process; returns (exit code, stderr)."""
    from eqtrain.cli.train import run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["eqtrain", *args])
    try:
        run()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:  # Hydra configured logging to streams pytest is about to close
        logging.getLogger().handlers.clear()
    return code, capsys.readouterr().err


def rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """‖a − b‖ / ‖b‖ over a list of tensors."""
    return (sum((x - y).pow(2).sum() for x, y in zip(a, b)) / sum(y.pow(2).sum() for y in b)).sqrt().item()


def write_idx(path, array: np.ndarray) -> None:
    """An IDX file as MNIST ships it: magic (0, 0, dtype 0x08, ndim), big-endian dims, bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist(root, folder="MNIST", n_train=30, n_test=20):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28))
        labels = rng.integers(0, 10, size=n)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        files[prefix] = (images, labels)
    return files


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until ``path`` exists (an event of the run, not a guess at its timing); the run must still be going."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)


def kill_and_resume(tmp_path: Path, args: list[str], steps_per_epoch: int) -> tuple[Path, Path]:
    """An uninterrupted run, and the same run sent SIGTERM once its first epoch's checkpoint exists, then
    resumed with resume=true. Returns (reference dir, resumed dir); checks the kill landed mid-epoch 2."""
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run([EQTRAIN, *args, f"hydra.run.dir={reference}"], cwd=tmp_path, check=True, capture_output=True)
    proc = subprocess.Popen([EQTRAIN, *args, f"hydra.run.dir={killed}"], cwd=tmp_path, stderr=subprocess.PIPE)
    wait_for(killed / "checkpoint.pt", proc)  # the first epoch's checkpoint: now in epoch 2
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    stopped_at = torch.load(killed / "checkpoint.pt", weights_only=True)["step"]
    assert steps_per_epoch < stopped_at < 2 * steps_per_epoch  # mid-epoch 2
    statuses = [json.loads(p.read_text())["status"] for p in killed.rglob("metrics.json")]
    assert statuses and set(statuses) == {"interrupted"}
    resume = [EQTRAIN, *args, f"hydra.run.dir={killed}", "resume=true"]
    subprocess.run(resume, cwd=tmp_path, check=True, capture_output=True)
    return reference, killed
