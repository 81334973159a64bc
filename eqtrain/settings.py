"""Validation of the top-level config and what it resolves to (the γ used, device, phases).

Everything here runs before any data is loaded or file written, so bad input costs nothing
and loses nothing. Messages name the key, the value and what would be valid.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from .augment import AUGMENT_KINDS
from .config import DEFAULT_GAMMA
from .modes import MODES, Dynamics, dynamics_from_config

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A config value that cannot be run; the message names the key, the value and what is valid."""


@dataclass(frozen=True)
class Phase:
    """A stretch of epochs trained with one dynamics (a plain run is one phase)."""

    mode: str
    dyn: Dynamics
    epochs: int
    augment: str


@dataclass(frozen=True)
class Settings:
    gamma: float  # the γ used by the regularized phases
    device: torch.device
    dtype: torch.dtype
    phases: tuple[Phase, ...]

    @property
    def epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    @property
    def mode(self) -> str:
        return ">".join(p.mode for p in self.phases)


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[int(part)] if part.isdigit() else getattr(cfg, part)
    return cfg


def validate(cfg) -> Settings:
    """Check the top-level keys and resolve the phases; raise ConfigError on the first bad value."""

    def need(ok: bool, key: str, valid: str) -> None:
        if not ok:
            raise ConfigError(f"{key}={_get(cfg, key)!r} is not valid: {valid}")

    need(cfg.gamma is None or (math.isfinite(cfg.gamma) and cfg.gamma >= 0), "gamma", "use a finite number >= 0")
    need(math.isfinite(cfg.lr) and cfg.lr > 0, "lr", "use a finite number > 0")
    need(cfg.batch_size >= 1, "batch_size", "use an int >= 1")
    need(cfg.epochs >= 0, "epochs", "use an int >= 0")
    need(cfg.max_steps is None or cfg.max_steps >= 0, "max_steps", "use an int >= 0 or null")
    need(cfg.log_every >= 1, "log_every", "use an int >= 1")
    need(math.isfinite(cfg.data_scale) and cfg.data_scale > 0, "data_scale", "use a finite number > 0")
    need(cfg.augment in AUGMENT_KINDS, "augment", f"use one of {', '.join(AUGMENT_KINDS)}")
    need(cfg.dtype in DTYPES, "dtype", f"use one of {', '.join(DTYPES)}")
    need(cfg.device in DEVICES, "device", f"use one of {', '.join(DEVICES)}")
    need(cfg.threads is None or cfg.threads >= 1, "threads", "use an int >= 1 or null")
    need(cfg.seeds >= 1, "seeds", "use an int >= 1")
    need(cfg.analyze_samples >= 1, "analyze_samples", "use an int >= 1")
    need(cfg.analyze_iterations >= 1, "analyze_iterations", "use an int >= 1")
    need(cfg.init.sigma >= 0 and math.isfinite(cfg.init.sigma), "init.sigma", "use a finite number >= 0")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' is not valid: no CUDA GPU is visible to torch; use device=cpu or device=auto")
    phases = _phases(cfg, need)
    regularized = [p.mode for p in phases if p.dyn.regularize]
    if regularized:
        gamma = DEFAULT_GAMMA if cfg.gamma is None else float(cfg.gamma)
    else:
        if cfg.gamma:
            which = (
                f"no phase regularizes ({_describe(phases)})"
                if cfg.phases
                else f"mode={cfg.mode.name} has no regularizer"
            )
            log.warning("gamma=%s is ignored: %s (use augreg or nomreg)", cfg.gamma, which)
        gamma = 0.0
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    return Settings(gamma=gamma, device=device, dtype=DTYPES[cfg.dtype], phases=phases)


def _phases(cfg, need) -> tuple[Phase, ...]:
    if not cfg.phases:
        return (Phase(cfg.mode.name, dynamics_from_config(cfg.mode), cfg.epochs, cfg.augment),)
    phases = []
    for i, p in enumerate(cfg.phases):
        need(p.mode in MODES, f"phases.{i}.mode", f"use one of {', '.join(MODES)}")
        need(p.epochs >= 0, f"phases.{i}.epochs", "use an int >= 0")
        augment = p.augment if p.augment is not None else cfg.augment
        need(augment in AUGMENT_KINDS, f"phases.{i}.augment", f"use one of {', '.join(AUGMENT_KINDS)}")
        phases.append(Phase(p.mode, MODES[p.mode], p.epochs, augment))
    return tuple(phases)


def _describe(phases) -> str:
    return " > ".join(f"{p.mode}[{p.augment}]x{p.epochs}" if p.dyn.augment else f"{p.mode}x{p.epochs}" for p in phases)


def hparams_of(cfg, settings: Settings) -> dict[str, object]:
    """The same keys for every run, so TensorBoard's HParams tab can compare a sweep."""
    return {
        "mode": settings.mode,
        "gamma": settings.gamma,
        "group": cfg.group.name,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "support": str(cfg.model.support),
        "parametrization": cfg.model.parametrization,
        "augment": cfg.augment,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "epochs": settings.epochs,
        "seed": cfg.seed,
        "init": cfg.init.scheme,
        "sigma": cfg.init.sigma,
        "data_scale": cfg.data_scale,
        "dtype": cfg.dtype,
        "max_steps": -1 if cfg.max_steps is None else cfg.max_steps,
        "train_limit": -1 if cfg.dataset.train_limit is None else cfg.dataset.train_limit,
        "test_limit": -1 if cfg.dataset.test_limit is None else cfg.dataset.test_limit,
        "image_size": str(cfg.dataset.image_size),
        "shuffle": cfg.dataset.shuffle,
        "channels": str(list(cfg.model.channels)),
        "kernel_size": cfg.model.kernel_size,
        "activation": cfg.model.activation,
        "pool": str(cfg.model.pool),
        "stride": str(cfg.model.stride),
        "layernorm": cfg.model.layernorm,
        "bias": cfg.model.bias,
        "basis_seed": cfg.model.basis_seed,
        "normalize": cfg.dataset.normalize,
        "phases": _describe(settings.phases) if cfg.phases else "",
        "twin": cfg.twin,
    }
