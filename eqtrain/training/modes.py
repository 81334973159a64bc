"""The five training dynamics of SPEC §4, and two with the function-space penalty, as one table of
switches — the only copy of it.

The training loop reads only these switches: what data the loss sees (``augment``), where the
parameters live (``constrain``: in E rather than in L), whether γΓ is added (``regularize``) and
whether the function-space penalty γ_fΓ_f is (``penalize_function``: the equivariance error of the
network's features made a loss, ``training.function_penalty``; docs/theory.md).
The ``mode`` config group (configs/mode/*.yaml) only names a row; the benchmark and the tests
iterate over this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dynamics:
    augment: bool
    constrain: bool
    regularize: bool
    penalize_function: bool = False


MODES: dict[str, Dynamics] = {
    "nominal": Dynamics(augment=False, constrain=False, regularize=False),
    "augmented": Dynamics(augment=True, constrain=False, regularize=False),
    "equivariant": Dynamics(augment=False, constrain=True, regularize=False),
    "augreg": Dynamics(augment=True, constrain=False, regularize=True),
    "nomreg": Dynamics(augment=False, constrain=False, regularize=True),
    "augfn": Dynamics(augment=True, constrain=False, regularize=False, penalize_function=True),
    "nomfn": Dynamics(augment=False, constrain=False, regularize=False, penalize_function=True),
}
