"""Shared helpers: compose the real config (as the CLI does) and run the real training loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

import eqtrain  # noqa: F401  (registers the schema)
from eqtrain.train import train


def make_config(*overrides: str):
    with initialize_config_module(config_module="eqtrain.configs", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


class Run:
    def __init__(self, run_dir: Path, result: dict) -> None:
        self.dir, self.result = run_dir, result

    def weights(self) -> list[torch.Tensor]:
        return torch.load(self.dir / "weights.pt", weights_only=True)["weights"]

    def scalars(self, tag: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one tag, read back from the event file with TensorBoard's reader."""
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(self.dir), size_guidance={"scalars": 0})
        acc.Reload()
        events = acc.Scalars(tag)
        return [e.step for e in events], [e.value for e in events]

    def metrics(self) -> dict:
        return json.loads((self.dir / "metrics.json").read_text())


@pytest.fixture
def run_train(tmp_path):
    """run_train("mode=augmented", ...) -> Run: the real loop on the composed config."""
    counter = iter(range(1000))

    def _run(*overrides: str) -> Run:
        run_dir = tmp_path / f"run{next(counter)}"
        run_dir.mkdir()
        return Run(run_dir, train(make_config(*overrides), run_dir))

    return _run


# A quick digits budget for the end-to-end tests (28x28 images, as in SPEC §6).
TINY = ("dataset.train_limit=100", "dataset.test_limit=50", "epochs=1")
