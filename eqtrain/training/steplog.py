"""The per-step scalars of SPEC §7, for every seed, measured in batches of steps.

A step's loss is known when the step ends; its distances to E (‖Π_{E⊥}A_i‖ per layer, in
float64) are a dozen small kernels, which cost more than the rest of the step's bookkeeping
together when run one step at a time (docs/design.md). So the step hands over A_t (one flat copy)
and the log holds the steps it is given (a step that hands over Π_{E⊥}A_t too, computed for the
regularizer, is measured at once from it: norms only); when they reach ``HOLD_ENTRIES`` weight entries, and
whenever the curves must be on disk or in order (before an evaluation is logged, at a phase
switch, a stop signal or the end), it measures all the held steps as one batch and writes their
rows.

Each row is measured on its own (``NetworkSpace.distances_flat``), so the values do not depend on
how the steps were batched: a resumed run logs exactly what an uninterrupted one does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..geometry.network_space import NetworkSpace
from ..run.tblog import RunLogger
from .metrics import FUNCTION_TAG, step_rows

HOLD_ENTRIES = 2**17  # weight entries held before a batch is measured: 1 MiB in float64 (see docs/design.md)


@dataclass(frozen=True)
class HeldStep:
    step: int
    time: float
    loss: torch.Tensor  # (N,)
    weights: torch.Tensor  # (N, P): A_t flat
    gamma: float
    lr: float
    diverged: tuple[bool, ...]  # per seed: not logged (it diverged earlier)
    extra: torch.Tensor | None  # (N, k): more scalars after the SPEC §7 ones (the twin distance)
    distances: torch.Tensor | None  # (N, layers + 2): d(A_t) if measured at ``add``, else None (at ``flush``)
    function: torch.Tensor | None  # (N,): γ_f·Γ_f at A_t, where the step added it


class StepLog:
    """Per-step rows of every seed into its ``RunLogger``, in the order of ``tags``."""

    def __init__(
        self, space: NetworkSpace, loggers: Sequence[RunLogger], tags: tuple[str, ...], data_scale: float
    ) -> None:
        self.space, self.loggers, self.tags, self.data_scale = space, list(loggers), tags, data_scale
        self.function = FUNCTION_TAG in tags  # a column of γ_f·Γ_f (0 at the steps of a phase without it)
        self._held: list[HeldStep] = []

    def add(
        self,
        step: int,
        loss: torch.Tensor,
        weights: torch.Tensor,
        gamma: float,
        diverged: Sequence[bool],
        extra: torch.Tensor | None = None,
        perp: torch.Tensor | None = None,
        *,
        lr: float,
        function: torch.Tensor | None = None,
    ) -> None:
        """Hold step ``step``: each seed's loss at A_t, A_t itself (N, P), γ_t, η_t (``lr``), γ_f·Γ_f
        (``function``, ``StepResult.function``) and the extra scalars; with ``perp`` (Π_{E⊥}A_t,
        ``StepResult.perp``) its distances are measured now, from it."""
        distances = None if perp is None else self.space.distances_flat(weights, perp).values
        if self.function and function is None:
            function = torch.zeros_like(loss)
        held = HeldStep(step, time.time(), loss, weights, gamma, lr, tuple(diverged), extra, distances, function)
        self._held.append(held)
        if len(self._held) * weights.numel() >= HOLD_ENTRIES:
            self.flush()

    def flush(self) -> None:
        """Measure the held steps as one batch and hand their rows to the loggers."""
        if not self._held:
            return
        held, self._held = self._held, []
        k, n = len(held), held[0].loss.shape[0]
        with torch.no_grad():
            unmeasured = [h.weights for h in held if h.distances is None]
            measured = iter(self.space.distances_flat(torch.cat(unmeasured)).values.split(n) if unmeasured else ())
            dist = torch.stack([next(measured) if h.distances is None else h.distances for h in held])  # (k, N, ·)
            loss = torch.stack([h.loss for h in held])
            rates = torch.tensor([[h.gamma, h.lr] for h in held], dtype=torch.float64, device=loss.device)
            function = torch.stack([h.function for h in held]) if self.function else None
            rows = step_rows(loss, dist, rates[:, :1], rates[:, 1:], self.data_scale, function)  # (k, N, tags)
            if held[0].extra is not None:
                rows = torch.cat([rows, torch.stack([h.extra for h in held]).to(rows.dtype)], dim=-1)
        steps, times = [h.step for h in held], [h.time for h in held]
        for seed, (logger, seed_rows) in enumerate(zip(self.loggers, rows.unbind(1), strict=True)):
            live = [i for i, h in enumerate(held) if not h.diverged[seed]]
            if len(live) == k:  # (the common case: a view, no copy)
                logger.log_rows(steps, times, self.tags, seed_rows)
            elif live:
                logger.log_rows([steps[i] for i in live], [times[i] for i in live], self.tags, seed_rows[live])
