"""γ schedules (SPEC §10): γ_t ramps from ``gamma_start`` to ``gamma`` over a number of steps, then stays.

A ramp lets the weights explore off E early and pulls them onto E late. The kinds:

- ``constant``: γ_t = γ (the default; the paper's dynamics);
- ``linear``: γ_start + (γ − γ_start)·u;
- ``exp`` (geometric): γ_start·(γ/γ_start)^u, so log γ_t is linear (needs γ_start > 0);
- ``cosine``: γ − (γ − γ_start)·(1 + cos πu)/2;

with u = min(t / ramp_steps, 1). Every kind gives γ_start at t = 0 (constant: γ) and exactly γ from
t = ramp_steps on. The step t counts from the start of the run, across phases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "linear", "exp", "cosine")


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
