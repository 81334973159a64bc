"""Validation of the typed config and what it resolves to: the γ used, device, dtype, phases, seeds.

``validate`` runs once, at the edge, before any data is loaded or file written, so bad input
costs nothing and loses nothing. Messages name the key, the value and what would be valid.
Below it, the code reads ``Settings``: typed values, never the raw Hydra config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..schema import (
    AUGMENT_KINDS,
    COORDINATES,
    DEFAULT_GAMMA,
    DEFAULT_GAMMA_F,
    LOGITS,
    LR_RULE,
    OPTIMIZERS,
    Config,
    penalty_layers,
    valid_lr,
)
from .modes import MODES, Dynamics
from .schedule import LR_SCHEDULES, SCHEDULES, GammaSchedule, StepSizeSchedule

if TYPE_CHECKING:
    import torch

    from ..optim.optimizer import UpdateRule

log = logging.getLogger(__name__)

# ``lr_decay`` left unset: torch's StepLR's factor for a step schedule; for an exponential one a tenth per 22
# epochs (torch's ExponentialLR has no default; 0.1 per epoch would end training within a few epochs).
DEFAULT_LR_DECAY = {"step": 0.1, "exp": 0.9}

# Checked before torch is imported (a bad value is answered at once); the largest finite value of each.
DTYPES = {"float32": 3.4028234663852886e38, "float64": 1.7976931348623157e308}
INT64 = 2**63 - 1  # torch's generators and sizes take 64-bit ints
# Each seed's random streams are seeded by seed·1 000 003 + stream (``state.generator``): a 64-bit int.
SEED_RANGE = (INT64 - 2) // 1_000_003
SEED_FLOOR_BYTES = 8 << 10  # memory a seed needs whatever the model: its two random streams' states (2 x 5 KiB)
MAX_THREADS = 1 << 16
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
    """A validated run: the typed config and what it resolves to."""

    config: Config
    gamma: float  # the γ used by the regularized phases
    device: torch.device
    dtype: torch.dtype
    phases: tuple[Phase, ...]
    gamma_f: float = 0.0  # the γ_f of the function-penalized phases (0 where there are none)

    @property
    def epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    @property
    def mode(self) -> str:
        return ">".join(p.mode for p in self.phases)

    @property
    def seed_ids(self) -> tuple[int, ...]:
        """The seeds this run trains: seed, seed + 1, ..., seed + seeds − 1."""
        return tuple(range(self.config.seed, self.config.seed + self.config.seeds))

    def of_seed(self, seed: int) -> Config:
        """The config of one seed's own run (what an ensemble writes into that seed's directory)."""
        return dataclasses.replace(self.config, seed=seed, seeds=1)

    def hparams(self, seed: int) -> dict[str, object]:
        return hparams_of(self.of_seed(seed), self)

    def gamma_schedule(self, steps_per_epoch: int) -> GammaSchedule:
        """γ_t of the regularized phases (SPEC §10); the ramp's length in steps."""
        cfg = self.config
        ramp = cfg.gamma_ramp_steps
        ramp = round(cfg.gamma_ramp_epochs * steps_per_epoch) if ramp is None else ramp
        return GammaSchedule(cfg.gamma_schedule, self.gamma, cfg.gamma_start, ramp)

    @property
    def update_rule(self) -> UpdateRule:
        """The optimizer of every phase (SPEC §12): ``optimizer`` and ``weight_decay``."""
        from ..optim.optimizer import UpdateRule  # (torch: not before a bad value is answered)

        opt = self.config.optimizer
        return UpdateRule(
            opt.name, opt.momentum, opt.nesterov, tuple(opt.betas), opt.eps, self.config.weight_decay, _decoupled(opt)
        )

    @property
    def coordinates(self) -> str:
        """E's coordinates in an equivariant model (SPEC §12.3): ``model.equivariant_coordinates``, where
        ``auto`` is the orbit values (tied) for Adam and AdamW, the orthonormal basis otherwise."""
        chosen = self.config.model.equivariant_coordinates
        if chosen != "auto":
            return chosen
        return "tied" if self.update_rule.adaptive else "orthonormal"

    @property
    def lr_decay(self) -> float:
        """``lr_decay``, or unset the schedule's own: 0.1 every ``lr_step_epochs`` (step), 0.9 per epoch (exp)."""
        decay = self.config.lr_decay
        return DEFAULT_LR_DECAY.get(self.config.lr_schedule, 1.0) if decay is None else decay

    def step_sizes(self, steps_per_epoch: int, total_steps: int) -> StepSizeSchedule:
        """η_t (SPEC §12): ``lr_schedule`` after ``lr_warmup_epochs``."""
        cfg = self.config
        warmup = round(cfg.lr_warmup_epochs * steps_per_epoch)
        return StepSizeSchedule(
            cfg.lr_schedule, cfg.lr, steps_per_epoch, total_steps, self.lr_decay, cfg.lr_step_epochs, cfg.lr_min, warmup
        )

    def config_hash(self) -> str:
        """A hash of everything that changes the numbers a run produces (a checkpoint must match it)."""
        container = dataclasses.asdict(self.config)
        for key in _NOT_HASHED:
            container.pop(key, None)
        for (group, key), default in _ADDED_LATER.items():  # at their default: the hash of the older version
            where = container if group is None else container[group]
            if where.get(key, default) == default:
                where.pop(key, None)
        if not container["optimizer"]:  # every optimizer key at its default: plain SGD, as before
            container.pop("optimizer")
        return hashlib.sha256(json.dumps(container, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Keys added after checkpoints were already written, with the value that reproduces the older runs:
# left at it, they stay out of the hash, so those checkpoints still resume.
_ADDED_LATER = {
    ("dataset", "rotate"): "none",
    ("dataset", "rotate_seed"): 0,
    ("dataset", "validation"): None,
    ("model", "padding"): "same",
    ("model", "pool_kind"): "avg",
    ("model", "norm"): None,
    ("model", "group_pool"): False,
    ("model", "bn_stats"): "batch",
    ("model", "bn_momentum"): 0.1,
    ("model", "bn_affine"): False,
    ("model", "equivariant_coordinates"): "auto",
    ("optimizer", "name"): "sgd",
    ("optimizer", "momentum"): 0.0,
    ("optimizer", "nesterov"): False,
    ("optimizer", "betas"): [0.9, 0.999],
    ("optimizer", "eps"): 1e-8,
    ("optimizer", "decoupled"): None,
    (None, "weight_decay"): 0.0,
    (None, "lr_schedule"): "constant",
    (None, "lr_decay"): None,
    (None, "lr_step_epochs"): 30,
    (None, "lr_min"): 0.0,
    (None, "lr_warmup_epochs"): 0.0,
    (None, "gamma_f"): None,
    (None, "gamma_f_layers"): [LOGITS],
}

# Keys that do not change the numbers a run produces, so a resume may change them.
_NOT_HASHED = ("resume", "force_resume", "threads", "analyze", "analyze_samples", "analyze_iterations", "eval_every")
_NOT_HASHED += ("eval_train_images",)


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[int(part)] if part.isdigit() else getattr(cfg, part)
    return cfg


def validate(cfg: Config) -> Settings:
    """Check the top-level keys and resolve the phases; raise ConfigError on the first bad value.

    Every value is checked before torch is imported: a bad value costs a fraction of a second.
    """

    def need(ok: bool, key: str, valid: str) -> None:
        if not ok:
            raise ConfigError(f"{key}={_get(cfg, key)!r} is not valid: {valid}")

    _check_ints(_as_dict(cfg))
    _check_values(cfg, need)
    phases = _phases(cfg, need)
    norm = cfg.model.norm or ("layernorm" if cfg.model.layernorm else "none")
    if cfg.model.bn_stats == "running" and not norm.startswith("batchnorm"):
        log.warning("model.bn_stats=running changes nothing here: model.norm=%s keeps no batch statistics", norm)
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' is not valid: no CUDA GPU is visible to torch; use device=cpu or device=auto")
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    return Settings(
        config=cfg,
        gamma=_gamma(cfg, phases),
        device=device,
        dtype=getattr(torch, cfg.dtype),
        phases=phases,
        gamma_f=_gamma_f(cfg, phases),
    )


def _as_dict(cfg) -> dict:
    """The config's values as nested dicts: the typed schema, or Hydra's config as composed."""
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def _check_ints(values, prefix: str = "") -> None:
    """Every int of the config, in lists too (``model.channels``), within a 64-bit int, before any of them
    reaches torch (which would say "Overflow when unpacking long long" without naming the key)."""
    items = values.items() if isinstance(values, dict) else enumerate(values)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list, tuple)):
            _check_ints(value, f"{name}.")
        elif isinstance(value, int) and not isinstance(value, bool) and not -INT64 - 1 <= value <= INT64:
            raise ConfigError(f"{name}={value!r} is not valid: outside a 64-bit int (±{INT64})")


def _check_sizes(cfg: Config, need) -> None:
    """Seeds and threads that no machine runs, refused in milliseconds: before anything is sized by them."""
    need(-SEED_RANGE <= cfg.seed <= SEED_RANGE, "seed", f"use an int in [-{SEED_RANGE}, {SEED_RANGE}]")
    need(
        cfg.seeds < 1 or cfg.seed + cfg.seeds - 1 <= SEED_RANGE,
        "seeds",
        f"seed + seeds - 1 must be at most {SEED_RANGE} (each seed's random streams are 64-bit seeded)",
    )
    need(cfg.threads is None or cfg.threads <= MAX_THREADS, "threads", f"use an int in [1, {MAX_THREADS}] or null")
    from ..run.machine import memory_limit

    room = memory_limit()  # all this process could ever have: the run's own size is checked when it starts
    floor = cfg.seeds * SEED_FLOOR_BYTES
    need(
        room is None or floor <= room,
        "seeds",
        f"each seed needs at least {SEED_FLOOR_BYTES >> 10} KiB whatever the model, {floor / 2**30:.1f} GiB in all, "
        f"and this machine has {room / 2**30 if room else 0:.1f} GiB",
    )


def _check_values(cfg: Config, need) -> None:
    need(cfg.gamma is None or (math.isfinite(cfg.gamma) and cfg.gamma >= 0), "gamma", "use a finite number >= 0")
    need(cfg.dtype in DTYPES, "dtype", f"use one of {', '.join(DTYPES)}")
    largest = DTYPES[cfg.dtype]  # γ and lr enter the update as numbers of the run's dtype
    need(cfg.gamma is None or cfg.gamma <= largest, "gamma", f"larger than the largest {cfg.dtype} ({largest:.3g})")
    need(cfg.lr <= largest or not math.isfinite(cfg.lr), "lr", f"larger than the largest {cfg.dtype} ({largest:.3g})")
    need(valid_lr(cfg.lr), "lr", LR_RULE)
    need(cfg.batch_size >= 1, "batch_size", "use an int >= 1")
    need(cfg.epochs >= 0, "epochs", "use an int >= 0")
    need(cfg.max_steps is None or cfg.max_steps >= 0, "max_steps", "use an int >= 0 or null")
    need(cfg.log_every >= 1, "log_every", "use an int >= 1")
    need(math.isfinite(cfg.data_scale) and cfg.data_scale > 0, "data_scale", "use a finite number > 0")
    need(cfg.augment in AUGMENT_KINDS, "augment", f"use one of {', '.join(AUGMENT_KINDS)}")
    need(cfg.device in DEVICES, "device", f"use one of {', '.join(DEVICES)}")
    need(cfg.threads is None or cfg.threads >= 1, "threads", "use an int >= 1 or null")
    need(cfg.eval_every >= 1, "eval_every", "use an int >= 1 (epochs between evaluations)")
    need(
        cfg.eval_train_images is None or cfg.eval_train_images >= 1,
        "eval_train_images",
        "use an int >= 1 or null (all training images)",
    )
    need(cfg.seeds >= 1, "seeds", "use an int >= 1")
    _check_sizes(cfg, need)
    need(cfg.gamma_schedule in SCHEDULES, "gamma_schedule", f"use one of {', '.join(SCHEDULES)}")
    need(math.isfinite(cfg.gamma_start) and cfg.gamma_start >= 0, "gamma_start", "use a finite number >= 0")
    need(cfg.gamma_schedule != "exp" or cfg.gamma_start > 0, "gamma_start", "gamma_schedule=exp needs a number > 0")
    need(math.isfinite(cfg.gamma_ramp_epochs) and cfg.gamma_ramp_epochs >= 0, "gamma_ramp_epochs", "use a number >= 0")
    need(cfg.gamma_ramp_steps is None or cfg.gamma_ramp_steps >= 0, "gamma_ramp_steps", "use an int >= 0 or null")
    need(cfg.analyze_samples >= 1, "analyze_samples", "use an int >= 1")
    need(cfg.analyze_iterations >= 1, "analyze_iterations", "use an int >= 1")
    need(cfg.init.sigma >= 0 and math.isfinite(cfg.init.sigma), "init.sigma", "use a finite number >= 0")
    _check_recipe(cfg, need)
    _check_function_penalty(cfg, need)


def _check_function_penalty(cfg: Config, need) -> None:
    """``gamma_f`` and ``gamma_f_layers``: a finite strength >= 0, and layers the model has."""
    need(
        cfg.gamma_f is None or (math.isfinite(cfg.gamma_f) and cfg.gamma_f >= 0), "gamma_f", "use a finite number >= 0"
    )
    largest = DTYPES[cfg.dtype]
    need(
        cfg.gamma_f is None or cfg.gamma_f <= largest, "gamma_f", f"larger than the largest {cfg.dtype} ({largest:.3g})"
    )
    valid = penalty_layers(len(cfg.model.channels))
    layers = list(cfg.gamma_f_layers)
    need(len(layers) > 0, "gamma_f_layers", f"name at least one of {', '.join(valid)}")
    for i, name in enumerate(layers):
        need(name in valid, f"gamma_f_layers.{i}", f"use names of {', '.join(valid)} (this model's layers)")
    need(len(set(layers)) == len(layers), "gamma_f_layers", "name each layer once")


def _decoupled(opt) -> bool:
    """``optimizer.decoupled``, or unset the optimizer's own: decoupled for adamw, coupled for the others."""
    return opt.name == "adamw" if opt.decoupled is None else opt.decoupled


def _check_recipe(cfg: Config, need) -> None:
    """The optimizer, its weight decay and the step-size schedule (SPEC §12)."""
    opt = cfg.optimizer
    need(opt.name in OPTIMIZERS, "optimizer.name", f"use one of {', '.join(OPTIMIZERS)}")
    need(math.isfinite(opt.momentum) and 0 <= opt.momentum < 1, "optimizer.momentum", "use a number in [0, 1)")
    need(opt.name == "sgd" or opt.momentum == 0, "optimizer.momentum", f"optimizer.name={opt.name} has betas instead")
    need(not opt.nesterov or opt.momentum > 0, "optimizer.nesterov", "Nesterov needs optimizer.momentum > 0")
    need(
        len(opt.betas) == 2 and all(math.isfinite(b) and 0 <= b < 1 for b in opt.betas),
        "optimizer.betas",
        "use two numbers in [0, 1): [beta1, beta2]",
    )
    need(math.isfinite(opt.eps) and opt.eps > 0, "optimizer.eps", "use a finite number > 0")
    need(
        opt.name != "adamw" or opt.decoupled in (None, True),
        "optimizer.decoupled",
        "adamw's weight decay is decoupled: use optimizer=adam for a coupled one",
    )
    need(math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0, "weight_decay", "use a finite number >= 0")
    need(
        not _decoupled(opt) or cfg.weight_decay * cfg.lr < 1,
        "weight_decay",
        f"a decoupled decay A <- (1 - lr*weight_decay)A needs lr * weight_decay < 1 (lr={cfg.lr!r})",
    )
    need(cfg.lr_schedule in LR_SCHEDULES, "lr_schedule", f"use one of {', '.join(LR_SCHEDULES)}")
    need(
        cfg.lr_decay is None or math.isfinite(cfg.lr_decay) and 0 < cfg.lr_decay <= 1,
        "lr_decay",
        "use a number in (0, 1] or null (step: 0.1, exp: 0.9)",
    )
    need(cfg.lr_step_epochs >= 1, "lr_step_epochs", "use an int >= 1")
    need(math.isfinite(cfg.lr_min) and 0 <= cfg.lr_min <= cfg.lr, "lr_min", f"use a number in [0, lr={cfg.lr!r}]")
    need(math.isfinite(cfg.lr_warmup_epochs) and cfg.lr_warmup_epochs >= 0, "lr_warmup_epochs", "use a number >= 0")
    coordinates = ("auto", *COORDINATES)
    need(
        cfg.model.equivariant_coordinates in coordinates,
        "model.equivariant_coordinates",
        f"use one of {', '.join(coordinates)}",
    )


def _gamma(cfg: Config, phases: tuple[Phase, ...]) -> float:
    """The γ of the regularized phases: as given, DEFAULT_GAMMA if unset; 0 (with a warning if set) otherwise."""
    if any(p.dyn.regularize for p in phases):
        return DEFAULT_GAMMA if cfg.gamma is None else float(cfg.gamma)
    if cfg.gamma:
        which = (
            f"no phase regularizes ({_describe(phases)})" if cfg.phases else f"mode={cfg.mode.name} has no regularizer"
        )
        log.warning("gamma=%s is ignored: %s (use augreg or nomreg)", cfg.gamma, which)
    return 0.0


def _gamma_f(cfg: Config, phases: tuple[Phase, ...]) -> float:
    """The γ_f of the function-penalized phases: as given, DEFAULT_GAMMA_F if unset; 0 (with a warning if set)
    otherwise."""
    if any(p.dyn.penalize_function for p in phases):
        return DEFAULT_GAMMA_F if cfg.gamma_f is None else float(cfg.gamma_f)
    if cfg.gamma_f:
        which = (
            f"no phase penalizes the function ({_describe(phases)})"
            if cfg.phases
            else f"mode={cfg.mode.name} has no function-space penalty"
        )
        log.warning("gamma_f=%s is ignored: %s (use augfn or nomfn)", cfg.gamma_f, which)
    return 0.0


def _phases(cfg, need) -> tuple[Phase, ...]:
    if not cfg.phases:
        need(cfg.mode.name in MODES, "mode.name", f"use one of {', '.join(MODES)}")
        return (Phase(cfg.mode.name, MODES[cfg.mode.name], cfg.epochs, cfg.augment),)
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


# What a user compares first in TensorBoard's HParams table (with the keys a job's command line sets).
COMPARED = ("mode", "gamma", "seed", "group", "model")
# config keys shown under another hparam's name
ALIASES = {"gamma_ramp_epochs": "gamma_ramp", "gamma_ramp_steps": "gamma_ramp", "rotate_seed": "rotate"}


def compared_keys(overrides: Sequence[str], names: Sequence[str]) -> tuple[str, ...]:
    """The hparams (of ``names``) a job's overrides set — ``model.channels=[8]`` sets ``channels``,
    ``init.scheme=x`` sets ``init``, ``seeds=30`` sets ``seed`` — then ``COMPARED``, once each."""
    found = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        parts = key.split(".")
        candidates = (key, parts[-1], ALIASES.get(parts[-1]), parts[0], key.removesuffix("s"))
        found += [next((c for c in candidates if c in names), None)]
    return tuple(dict.fromkeys(k for k in [*found, *COMPARED] if k is not None and k in names))


def hparams_of(cfg: Config, settings: Settings) -> dict[str, object]:
    """The same keys for every run, so TensorBoard's HParams tab can compare a sweep."""
    return {
        "mode": settings.mode,
        "gamma": settings.gamma,
        "gamma_f": settings.gamma_f,
        "gamma_f_layers": ",".join(cfg.gamma_f_layers) if settings.gamma_f else "",
        "group": cfg.group.name,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "support": str(cfg.model.support),
        "parametrization": cfg.model.parametrization,
        "augment": cfg.augment,
        "lr": cfg.lr,
        "optimizer": settings.update_rule.name,
        "momentum": settings.update_rule.momentum,
        "nesterov": settings.update_rule.nesterov,
        "betas": str(list(settings.update_rule.betas)),
        "eps": settings.update_rule.eps,
        "weight_decay": cfg.weight_decay,
        "decoupled": settings.update_rule.decoupled,
        "lr_schedule": cfg.lr_schedule,
        "lr_decay": settings.lr_decay,
        "lr_step_epochs": cfg.lr_step_epochs,
        "lr_min": cfg.lr_min,
        "lr_warmup_epochs": cfg.lr_warmup_epochs,
        "coordinates": settings.coordinates,  # E's, in an equivariant phase or twin (the same in every mode)
        "bn_stats": cfg.model.bn_stats,
        "bn_momentum": cfg.model.bn_momentum,
        "bn_affine": cfg.model.bn_affine,
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
        "validation": -1 if cfg.dataset.validation is None else cfg.dataset.validation,
        "image_size": str(cfg.dataset.image_size),
        "shuffle": cfg.dataset.shuffle,
        "channels": str(list(cfg.model.channels)),
        "fibers": str(cfg.model.fibers if isinstance(cfg.model.fibers, str) else list(cfg.model.fibers)),
        "kernel_size": cfg.model.kernel_size,
        "activation": cfg.model.activation,
        "pool": str(cfg.model.pool),
        "stride": str(cfg.model.stride),
        "layernorm": cfg.model.layernorm,
        "norm": str(cfg.model.norm),
        "padding": cfg.model.padding,
        "pool_kind": cfg.model.pool_kind,
        "group_pool": cfg.model.group_pool,
        "bias": cfg.model.bias,
        "basis_seed": cfg.model.basis_seed,
        "normalize": cfg.dataset.normalize,
        "rotate": "none" if cfg.dataset.rotate == "none" else f"{cfg.dataset.rotate} (seed {cfg.dataset.rotate_seed})",
        "phases": _describe(settings.phases) if cfg.phases else "",
        "twin": cfg.twin,
        "gamma_schedule": cfg.gamma_schedule,
        "gamma_start": cfg.gamma_start if cfg.gamma_schedule != "constant" else 0.0,
        "gamma_ramp": _ramp(cfg) if cfg.gamma_schedule != "constant" else "",
    }


def _ramp(cfg: Config) -> str:
    return f"{cfg.gamma_ramp_steps} steps" if cfg.gamma_ramp_steps is not None else f"{cfg.gamma_ramp_epochs:g} epochs"
