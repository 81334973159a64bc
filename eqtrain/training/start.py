"""How a run starts: every model it will need checked up front, A₀ of every seed, or the checkpoint's state."""

from __future__ import annotations

import logging

import torch

from ..data.datasets import Data
from ..geometry.group import Group
from ..nets.cnn import EqCNN, build_model
from ..nets.init import initial_weights_of_seeds
from .footprint import check_fits
from .settings import ConfigError, Phase, Settings
from .state import RunState

log = logging.getLogger("eqtrain")


def new_model(settings: Settings, constrain: bool, group: Group, data: Data) -> EqCNN:
    cfg = settings.config
    n = len(settings.seed_ids)
    model = build_model(
        cfg.model, group, data.image_shape, data.n_classes, constrain, settings.dtype, n, settings.coordinates
    )
    return model.to(settings.device)


def build_for_phase(settings: Settings, phase: Phase, group: Group, data: Data, start: EqCNN) -> EqCNN:
    """The model of a phase, holding the weights A of ``start`` (projected onto E if constrained) and, as
    they are, its invariant parameters (biases, the batch norm's affine) and the batch norm's running
    statistics (SPEC §12): outside A, they are the same numbers whichever space θ parametrizes."""
    model = new_model(settings, phase.dyn.constrain, group, data)
    model.set_weights(start.weights())
    with torch.no_grad():
        for p, old in zip(model.invariant_parameters(), start.invariant_parameters(), strict=True):
            p.copy_(old)
        model.norm_stats.copy_(start.norm_stats)
    return model


def check_models(settings: Settings, group: Group, data: Data) -> None:
    """Build every model the run will need, so that a bad config fails before anything is written."""
    phases = settings.phases
    needs = [(f"mode={phases[0].mode}", phases[0].dyn.constrain)]
    needs += [(f"phases.{i}.mode={p.mode}", p.dyn.constrain) for i, p in enumerate(phases) if i]
    needs += [("twin=true", True)] * settings.config.twin
    for i, (reason, constrain) in enumerate(needs):
        try:
            build_model(
                settings.config.model, group, data.image_shape, data.n_classes, constrain, settings.dtype,
                coordinates=settings.coordinates,
            )  # fmt: skip
        except ValueError as err:
            raise ConfigError(f"{reason}: {err}" if i else str(err)) from err


def starting_point(settings: Settings, group: Group, data: Data, ckpt: dict | None) -> RunState:
    """The run's state at its start: every seed at its A₀ (the same for every mode), or the checkpoint's."""
    check_models(settings, group, data)
    cfg = settings.config
    if settings.device.type == "cpu":  # before the seeds' weights are made: a run that cannot fit never starts
        largest = build_model(cfg.model, group, data.image_shape, data.n_classes, False, settings.dtype)
        orbit = any(p.dyn.augment and p.augment == "orbit" for p in settings.phases)
        check_fits(settings, largest, group.order if orbit else 1)
    phase = settings.phases[ckpt["phase"] if ckpt is not None else 0]
    model = new_model(settings, phase.dyn.constrain, group, data)
    a0 = initial_weights_of_seeds(model, cfg.init.scheme, cfg.init.sigma, list(settings.seed_ids))
    model.set_weights(a0)
    twin = None
    if cfg.twin:  # the equivariant twin starts from Π_E(A₀) (SPEC §7)
        twin = new_model(settings, True, group, data)
        twin.set_weights(a0)
    state = RunState(settings.seed_ids, model, twin, settings.update_rule, config_hash=settings.config_hash())
    if ckpt is not None:
        if list(ckpt.get("seeds", [])) != list(settings.seed_ids):
            raise ConfigError(f"resume: the checkpoint holds seeds {ckpt.get('seeds')}, not {list(settings.seed_ids)}")
        try:
            state.load_state_dict(ckpt)
        except ValueError as err:  # another optimizer's state or E's coordinates (force_resume)
            raise ConfigError(f"resume: {err}; force_resume cannot carry that over") from err
        except RuntimeError as err:  # the model's tensors do not fit (force_resume across models)
            detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
            raise ConfigError(
                f"resume: the checkpoint's model does not fit this config ({detail.rstrip('. ')}); force_resume "
                "can change the training keys (lr, gamma, schedules), not the model's (model.*) or the mode's space"
            ) from err
        log.info("resuming at step %d (epoch %d, phase %d)", state.step, state.epoch, state.phase)
    return state
