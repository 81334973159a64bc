"""Schedules: γ_t (SPEC §10) and the step size η_t (SPEC §12).

γ schedules (SPEC §10): γ_t ramps from ``gamma_start`` to ``gamma`` over a number of steps, then stays.

A ramp lets the weights explore off E early and pulls them onto E late. The kinds:

- ``constant``: γ_t = γ (the default; the paper's dynamics);
- ``linear``: γ_start + (γ − γ_start)·u;
- ``exp`` (geometric): γ_start·(γ/γ_start)^u, so log γ_t is linear (needs γ_start > 0);
- ``cosine``: γ − (γ − γ_start)·(1 + cos πu)/2;

with u = min(t / ramp_steps, 1). Every kind gives γ_start at t = 0 (constant: γ) and exactly γ from
t = ramp_steps on. The step t counts from the start of the run, across phases.

Step-size schedules (SPEC §12), ``StepSizeSchedule``: η_t from the peak η (``lr``), after an optional linear
warm-up η·(t + 1)/W over the first W steps:

- ``constant``: η (the default; the paper's dynamics, exactly the float ``lr``);
- ``step``: η·decay^⌊epoch / step_epochs⌋ (torch's StepLR stepped once per epoch);
- ``exp``: η·decay^epoch (torch's ExponentialLR stepped once per epoch);
- ``cosine``: η_min + (η − η_min)·(1 + cos πu)/2 with u the fraction of the steps after the warm-up
  done (torch's CosineAnnealingLR stepped every step), so the last step has η_min.

``epoch`` is the epoch the step belongs to (t // steps_per_epoch); the warm-up's steps count in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "linear", "exp", "cosine")
LR_SCHEDULES = ("constant", "step", "exp", "cosine")


@dataclass(frozen=True)
class GammaSchedule:
    kind: str
    gamma: float  # the final value
    start: float = 0.0  # γ at step 0 (not used by constant)
    ramp_steps: int = 0  # steps from start to gamma

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"gamma_schedule={self.kind!r} is not valid; use one of {', '.join(SCHEDULES)}")
        if self.kind == "exp" and not self.start > 0:
            raise ValueError(f"gamma_start={self.start!r} is not valid for gamma_schedule=exp: use a number > 0")

    def __call__(self, step: int) -> float:
        if self.kind == "constant" or step >= self.ramp_steps:
            return self.gamma
        u = step / self.ramp_steps
        if self.kind == "linear":
            return self.start + (self.gamma - self.start) * u
        if self.kind == "exp":
            return self.start * (self.gamma / self.start) ** u
        return self.gamma - (self.gamma - self.start) * (1 + math.cos(math.pi * u)) / 2


@dataclass(frozen=True)
class StepSizeSchedule:
    kind: str
    lr: float  # the peak η
    steps_per_epoch: int
    total_steps: int
    decay: float = 0.1  # step, exp: the factor per step_epochs epochs / per epoch
    step_epochs: int = 30
    lr_min: float = 0.0  # cosine: η at the last step
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.kind not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={self.kind!r} is not valid; use one of {', '.join(LR_SCHEDULES)}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        epoch = step // self.steps_per_epoch
        if self.kind == "step":
            return self.lr * self.decay ** (epoch // self.step_epochs)
        if self.kind == "exp":
            return self.lr * self.decay**epoch
        if self.kind == "cosine":
            span = self.total_steps - 1 - self.warmup_steps
            u = 1.0 if span <= 0 else min((step - self.warmup_steps) / span, 1.0)
            return self.lr_min + (self.lr - self.lr_min) * (1 + math.cos(math.pi * u)) / 2
        return self.lr
