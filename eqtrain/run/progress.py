"""Progress on the console: a tqdm bar on a terminal, a plain line every few seconds elsewhere.

On a terminal the bar shows steps/s, the ETA, the loss and d(A). Off a terminal (a log file, a
SLURM job) a redrawn bar would be one endless line, so the same numbers are logged as a plain
line every ``every_s`` seconds. Values are read from the device only when a line is drawn.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import torch
from tqdm import tqdm

log = logging.getLogger("eqtrain")

PLAIN_FORMAT = "step {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class Progress:
    def __init__(self, total_steps: int, start: int = 0, every_s: float | None = None) -> None:
        self.total, self.start = total_steps, start
        self.tty = sys.stderr.isatty()
        self.every_s = every_s if every_s is not None else (0.25 if self.tty else 10.0)
        self._bar = (
            tqdm(total=total_steps, initial=start, unit="step", dynamic_ncols=True, leave=False, file=sys.stderr)
            if self.tty
            else None
        )
        self._began = self._last = time.monotonic()

    def update(self, step: int, loss: torch.Tensor, distance: Callable[[], torch.Tensor]) -> None:
        """At step ``step``: the mean over the seeds of the loss (a tensor on the run's device) and of
        d(A), measured by ``distance()`` only when a line is drawn."""
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        postfix = f"loss={loss.mean().item():.4f}, d(A)={distance().mean().item():.3e}"
        if self._bar is not None:
            self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(step - self._bar.n)
            return
        line = tqdm.format_meter(
            step - self.start, self.total - self.start, now - self._began, bar_format=PLAIN_FORMAT,
            unit="step", postfix=postfix,
        )  # fmt: skip
        log.info(line.replace(f"{step - self.start}/", f"{step}/", 1) if self.start else line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
