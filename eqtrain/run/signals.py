"""Stop requests: SIGINT, SIGTERM and SIGUSR2 (submitit's preemption signal) end a run cleanly.

The handler only sets a flag; the training loop checks it between steps, writes a checkpoint
and then hands over to whatever handler was installed before (submitit's, which requeues a
preempted SLURM job), or exits with 128 + the signal number.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR2", None)) if s is not None)


class StopSignals:
    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # handlers only in the main thread
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    @property
    def requested(self) -> bool:
        return self.received is not None

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def hand_over(self) -> None:
        """After the checkpoint: let the previous handler act (e.g. requeue), else exit."""
        signum = self.received
        previous = self._previous.get(signum)
        self.__exit__()
        if callable(previous) and previous not in (signal.default_int_handler,):
            previous(signum, None)
        sys.exit(128 + signum)
