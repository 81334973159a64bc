"""TensorBoard event files, hparams, metrics.json and the console progress line.

Per-step scalars arrive as one small tensor per step (kept on the device), and are written in
chunks through ``events.EventWriter``'s vectorised path: one event per step carrying all its
values. (``SummaryWriter.add_scalar`` costs ~50 µs per tag, more than the whole distance
computation of a step.) The event files read back like any others.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard.summary import hparams as hparams_summary

from .events import EventWriter


class RunLogger:
    def __init__(self, run_dir: str | Path, flush_every: int = 500, purge_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.events = EventWriter(self.run_dir, purge_step=purge_step)
        self.flush_every = flush_every
        self._tags: tuple[str, ...] | None = None
        self._rows: list[torch.Tensor] = []
        self._steps: list[int] = []
        self._times: list[float] = []

    def log_step(self, step: int, tags: tuple[str, ...], row: torch.Tensor) -> None:
        """Buffer one step's scalars: ``row[j]`` is the value of ``tags[j]`` (a tensor, kept on its device)."""
        if tags != self._tags:
            self._write_rows()
            self._tags = tags
        self._rows.append(row.detach())
        self._steps.append(step)
        self._times.append(time.time())
        if len(self._rows) >= self.flush_every:
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
            values = torch.stack(self._rows).float().cpu().numpy()  # one device sync per chunk
            self.events.write_scalars(list(self._tags), np.array(self._steps), np.array(self._times), values)
            self._rows, self._steps, self._times = [], [], []

    def hparams(self, params: dict[str, object], metric_tags: list[str]) -> None:
        """hparams for TensorBoard's HParams tab, in the run's own directory."""
        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
        for summary in hparams_summary(clean, {tag: 0.0 for tag in metric_tags}):
            self.events.write_summary(summary)

    def close(self) -> None:
        self.flush()
        self.events.close()


def write_json(path: str | Path, payload: dict) -> None:
    """Write JSON atomically (temp file + rename): a reader never sees half a file.

    Non-finite floats become the strings "nan" / "inf" / "-inf" (strict JSON has no such numbers).
    """
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_finite(payload), indent=2, sort_keys=True, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class Progress:
    """One console line: epoch, step, loss and distance; redrawn in place on a terminal."""

    def __init__(self, total_steps: int, every_s: float = 0.25) -> None:
        self.total, self.every_s = total_steps, every_s
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def update(self, epoch: int, step: int, loss: torch.Tensor, dist: torch.Tensor) -> None:
        now = time.monotonic()
        if not self.tty or now - self._last < self.every_s:
            return
        self._last = now
        frac = step / max(self.total, 1)
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        sys.stderr.write(
            f"\r[{bar}] epoch {epoch} step {step}/{self.total} loss {loss.item():.4f} d(A) {dist.item():.3e}"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
