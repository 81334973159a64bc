"""The five training dynamics of SPEC §4 as one table of switches.

The training loop reads only these switches: what data the loss sees (``augment``), where the
parameters live (``constrain``: in E rather than in L) and whether γΓ is added (``regularize``).
The ``mode`` config group (configs/mode/*.yaml) holds the same table, one row per file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dynamics:
    augment: bool
    constrain: bool
    regularize: bool


MODES: dict[str, Dynamics] = {
    "nominal": Dynamics(augment=False, constrain=False, regularize=False),
    "augmented": Dynamics(augment=True, constrain=False, regularize=False),
    "equivariant": Dynamics(augment=False, constrain=True, regularize=False),
    "augreg": Dynamics(augment=True, constrain=False, regularize=True),
    "nomreg": Dynamics(augment=False, constrain=False, regularize=True),
}


def dynamics_from_config(mode_cfg) -> Dynamics:
    """The switches of ``mode``; a custom row is allowed when its name is not a known mode."""
    dyn = Dynamics(bool(mode_cfg.augment), bool(mode_cfg.constrain), bool(mode_cfg.regularize))
    known = MODES.get(mode_cfg.name)
    if known is not None and known != dyn:
        raise ValueError(
            f"mode={mode_cfg.name} means {known}, but the config says {dyn}; "
            "give a custom combination its own mode.name"
        )
    return dyn
