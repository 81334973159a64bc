"""Progress on the console: a tqdm bar on a terminal or in a notebook, a plain line every few seconds elsewhere.

On a terminal the bar shows steps/s, the ETA, the loss and d(A); in a Jupyter notebook
(``eqtrain.train`` there) the same bar as a notebook widget (``tqdm.auto``). Off both (a log file, a
SLURM job) a redrawn bar would be one endless line, so the same numbers are logged as a plain line
every ``every_s`` seconds, the step counted from the run's start (a resumed run's too). Values are
read from the device only when a line is drawn.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import torch
from tqdm import tqdm
from tqdm.auto import tqdm as auto_tqdm

log = logging.getLogger("eqtrain")

PLAIN_FORMAT = "step {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class Progress:
    def __init__(self, total_steps: int, start: int = 0, every_s: float | None = None) -> None:
        self.total, self.start = total_steps, start
        self._bar = console_bar(total=total_steps, initial=start, unit="step", dynamic_ncols=True)
        self.tty = self._bar is not None
        self.every_s = every_s if every_s is not None else (0.25 if self.tty else 10.0)
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
            step, self.total, now - self._began, bar_format=PLAIN_FORMAT, unit="step", postfix=postfix,
            initial=self.start,  # the rate and the time left from this process's steps only
        )  # fmt: skip
        log.info(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class Counter:
    """Progress of ``total`` units of work (``eqtrain-analyze``'s Hessian-vector products): a bar on a terminal
    or in a notebook, else a plain line with the rate and the time left every ``every_s`` seconds."""

    def __init__(self, total: int, unit: str, label: str, every_s: float = 10.0) -> None:
        self.total, self.unit, self.label, self.every_s, self.done = total, unit, label, every_s, 0
        self._bar = console_bar(total=total, unit=unit, desc=label)
        self._began = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            log.info(
                "%s: %s", self.label,
                tqdm.format_meter(self.done, self.total, now - self._began, unit=self.unit, bar_format=COUNT_FORMAT),
            )  # fmt: skip

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


COUNT_FORMAT = "{n_fmt}/{total_fmt} {unit} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}]"


def console_bar(**kwargs):
    """tqdm's bar on stderr where one can be drawn — a terminal, or a notebook's widget (tqdm.auto) — or None
    (a log file, a SLURM job: the callers log plain lines instead)."""
    notebook = in_notebook()
    if not (notebook or sys.stderr.isatty()):
        return None
    return (auto_tqdm if notebook else tqdm)(leave=False, file=sys.stderr, **kwargs)


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (Jupyter's, Colab's: an IPython kernel app), where stderr is no
    terminal but a bar shows (tqdm.autonotebook's test)."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:  # noqa: BLE001  (an IPython without a running shell)
        return False
