"""How a run starts: every model it will need checked up front, A₀ of every seed, or the checkpoint's state."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..data.datasets import Data
from ..geometry.group import Group
from ..nets.cnn import EqCNN, build_model
from ..nets.init import initial_weights_of_seeds
from .footprint import check_run_fits
from .settings import ConfigError, Phase, Settings
from .state import RunState

log = logging.getLogger("eqtrain")


def new_model(settings: Settings, constrain: bool, group: Group, data: Data) -> EqCNN:
    cfg = settings.config
    n = settings.config.seeds
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


# What shapes a run's state beyond A's values: a checkpoint of another value of these cannot be loaded.
STATE_KEYS = ("mode", "phases", "twin", "group", "model", "dataset.image_size", "optimizer")
CARRIED = "force_resume carries the state over to other training keys (lr, gamma, schedules, data, epochs)"
_MISSING = object()


def resume_refusal(settings: Settings, run_dir: Path | None, err: Exception) -> str:
    """One line for a checkpoint that cannot be loaded into this run: the keys that differ from the run that
    wrote it (its config.yaml), then what did not fit."""
    if isinstance(err, RuntimeError):  # torch's "Error(s) in loading state_dict": its first detail
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err)).rstrip(". ")
        detail = f"the checkpoint's model does not fit this config ({detail})"
    else:
        detail = str(err)
    differ = _differing_keys(settings, run_dir) if run_dir is not None else []
    if differ:
        return f"resume: the checkpoint's run had {', '.join(differ)}: {CARRIED}, not to these ({detail})"
    return f"resume: {detail}; {CARRIED} only"


def _differing_keys(settings: Settings, run_dir: Path) -> list[str]:
    """``key=there (here value)`` for the ``STATE_KEYS`` where the run that wrote ``run_dir`` differs (at most 3)."""
    import dataclasses

    from omegaconf import OmegaConf

    from ..run.files import CONFIG_FILE

    path = next(
        (p for p in (run_dir / CONFIG_FILE, *sorted(run_dir.glob(f"seed=*/{CONFIG_FILE}"))) if p.is_file()), None
    )
    try:
        there = OmegaConf.to_container(OmegaConf.load(path)) if path is not None else {}
    except Exception:  # noqa: BLE001  (a damaged config.yaml: no names, the detail alone)
        there = {}
    here = dataclasses.asdict(settings.config)
    differ = [
        f"{key}={value} (here {_dotted(here, key)})"
        for top in STATE_KEYS
        for key, value in _leaves(top, _dotted(there, top))
        if value is not _MISSING and _plain(value) != _plain(_dotted(here, key))
    ]
    return differ[:3]


def _dotted(values, key: str):
    for part in key.split("."):
        if not isinstance(values, dict) or part not in values:
            return _MISSING  # (a key added after that run was written: it had the default)
        values = values[part]
    return values


def _leaves(prefix: str, value) -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(f"{prefix}.{k}", v)]
    return [(prefix, value)]


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def check_width(settings: Settings, group: Group, data: Data) -> None:
    """Refuse a model one seed of which cannot be built (``model.channels`` of a hundred million), before building it:
    its weights alone, with their gradient and a copy, beyond the memory left (the memory model then sizes the run)."""
    from ..nets.cnn import architecture_from_config
    from ..run.machine import available_bytes

    model_cfg = settings.config.model
    try:
        arch = architecture_from_config(model_cfg, data.image_shape, data.n_classes)
        entries = arch.weight_entries(group)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    need, room = 3 * entries * settings.dtype.itemsize, available_bytes()
    if room is not None and need > room:
        raise ConfigError(
            f"model.channels={list(model_cfg.channels)} makes {entries:.3g} weights per seed, {need / 2**30:.1f} GiB "
            f"with their gradient and a copy, but {room / 2**30:.1f} GiB is available; use fewer channels"
        )


def check_models(settings: Settings, group: Group, data: Data) -> None:
    """Build every model the run will need, so that a bad config fails before anything is written."""
    phases = settings.phases
    needs = [(f"mode={phases[0].mode}", phases[0].dyn.constrain)]
    needs += [(f"phases.{i}.mode={p.mode}", p.dyn.constrain) for i, p in enumerate(phases) if i]
    needs += [("twin=true", True)] * settings.config.twin
    check_width(settings, group, data)
    for i, (reason, constrain) in enumerate(needs):
        try:
            build_model(
                settings.config.model, group, data.image_shape, data.n_classes, constrain, settings.dtype,
                coordinates=settings.coordinates,
            )  # fmt: skip
        except ValueError as err:
            raise ConfigError(f"{reason}: {err}" if i else str(err)) from err


def starting_point(
    settings: Settings, group: Group, data: Data, ckpt: dict | None, run_dir: Path | None = None
) -> RunState:
    """The run's state at its start: every seed at its A₀ (the same for every mode), or the checkpoint's
    (from ``run_dir``, whose earlier config names what differs when the checkpoint cannot be loaded)."""
    check_models(settings, group, data)
    cfg = settings.config
    if settings.device.type == "cpu":  # before the seeds' weights are made: a run that cannot fit never starts
        check_run_fits(settings, group, data.image_shape, data.n_classes)
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
        except (ValueError, RuntimeError) as err:  # force_resume across runs whose states do not fit
            raise ConfigError(resume_refusal(settings, run_dir, err)) from err
        log.info("resuming at step %d (epoch %d, phase %d)", state.step, state.epoch, state.phase)
    return state
