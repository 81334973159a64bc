"""TensorBoard: one run's event file, its per-step scalars and its hparams.

Per-step scalars arrive as small tensors of one or more steps (kept on the device), and are written in
chunks through ``events.EventWriter``'s vectorised path: one event per step carrying all its
values. (``SummaryWriter.add_scalar`` costs ~50 µs per tag, more than the whole distance
computation of a step.) The event files read back like any others.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard.summary import hparams as hparams_summary

from .events import EventWriter


def _mark_differing(experiment, names: set[str]):
    """The experiment summary with ``differs`` set on the hparams ``names``."""
    (value,) = experiment.value
    data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in names
    value.metadata.plugin_data.content = data.SerializeToString()
    return experiment


class RunLogger:
    def __init__(self, run_dir: str | Path, flush_every: int = 500, purge_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.events = EventWriter(self.run_dir, purge_step=purge_step)
        self.flush_every = flush_every
        self._tags: tuple[str, ...] | None = None
        self._rows: list[torch.Tensor] = []
        self._steps: list[int] = []
        self._times: list[float] = []

    def log_rows(self, steps: list[int], times: list[float], tags: tuple[str, ...], rows: torch.Tensor) -> None:
        """Buffer the scalars of several steps: ``rows[i, j]`` is the value of ``tags[j]`` at ``steps[i]``
        (a tensor, kept on its device; ``times`` are the steps' wall-clock times)."""
        if tags != self._tags:
            self._write_rows()
            self._tags = tags
        self._rows.append(rows.detach())
        self._steps += steps
        self._times += times
        if len(self._steps) >= self.flush_every:
            self.flush()

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Write scalars now (per-epoch metrics), after the buffered steps so the file stays in order."""
        self._write_rows()
        values = np.array([[float(v) for v in scalars.values()]])
        self.events.write_scalars(list(scalars), np.array([step]), np.array([time.time()]), values)

    def flush(self) -> None:
        self._write_rows()
        self.events.flush()

    def _write_rows(self) -> None:
        if self._rows:
            values = torch.cat(self._rows).float().cpu().numpy()  # one device sync per chunk
            self.events.write_scalars(list(self._tags), np.array(self._steps), np.array(self._times), values)
            self._rows, self._steps, self._times = [], [], []

    def hparams(self, params: dict[str, object], metric_tags: list[str], compared: Sequence[str] = ()) -> None:
        """hparams for TensorBoard's HParams tab, in the run's own directory, ``compared`` marked as differing.

        TensorBoard's table orders its columns by (not ``differs``, name) and shows the first few
        (tensorboard/plugins/hparams/backend_context.py): marking the ``compared`` keys as differing puts
        them on the first screen, instead of the alphabet's first keys (``activation``, ``augment``, ...).
        """
        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
        experiment, *session = hparams_summary(clean, {tag: 0.0 for tag in metric_tags})
        for summary in (_mark_differing(experiment, set(compared)), *session):
            self.events.write_summary(summary)

    def close(self) -> None:
        self.flush()
        self.events.close()
