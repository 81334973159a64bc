"""TensorBoard event files, hparams, metrics.json and the console progress line.

Per-step scalars arrive as 0-d tensors; they are stacked into one small tensor per step and
written in chunks, each step as one ``Summary`` protobuf carrying all its values (one
``add_scalar`` per tag costs ~50 µs, more than the whole distance computation). The event
files read back like any others.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary


class RunLogger:
    def __init__(self, run_dir: str | Path, flush_every: int = 500, purge_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)
        self.flush_every = flush_every
        self._tags: tuple[str, ...] | None = None
        self._rows: list[torch.Tensor] = []
        self._steps: list[int] = []
        self._times: list[float] = []

    def log_step(self, step: int, scalars: dict[str, torch.Tensor]) -> None:
        """Buffer one step's scalars (0-d tensors with the same tags every step)."""
        tags = tuple(scalars)
        if tags != self._tags:
            self.flush()
            self._tags = tags
        self._rows.append(torch.stack(list(scalars.values())).detach())
        self._steps.append(step)
        self._times.append(time.time())
        if len(self._rows) >= self.flush_every:
            self.flush()

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Write scalars now (per-epoch metrics), after the buffered steps so the file stays in order."""
        self._write_rows()
        self._write(step, time.time(), list(scalars), list(scalars.values()))

    def flush(self) -> None:
        self._write_rows()
        self.writer.flush()

    def _write_rows(self) -> None:
        if self._rows:
            values = torch.stack(self._rows).double().cpu().tolist()
            for step, wall, row in zip(self._steps, self._times, values):
                self._write(step, wall, self._tags, row)
            self._rows, self._steps, self._times = [], [], []

    def _write(self, step: int, wall: float, tags, values) -> None:
        summary = Summary(value=[Summary.Value(tag=t, simple_value=float(v)) for t, v in zip(tags, values)])
        self.writer._get_file_writer().add_summary(summary, step, wall)

    def hparams(self, params: dict[str, object], metric_tags: list[str]) -> None:
        """hparams for TensorBoard's HParams tab, in the run's own directory."""
        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
        for summary in hparams_summary(clean, {tag: 0.0 for tag in metric_tags}):
            self.writer._get_file_writer().add_summary(summary)

    def close(self) -> None:
        self.flush()
        self.writer.close()


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
