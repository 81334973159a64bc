"""Rebuild what a finished run trained — config, data, group and model with its final weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ..data.datasets import Data, load_dataset
from ..geometry.group import Group
from ..nets.cnn import EqCNN, build_model
from ..run.files import CONFIG_FILE, WEIGHTS_FILE
from ..schema import Config
from .settings import Settings, validate


@dataclass
class Restored:
    settings: Settings
    model: EqCNN  # one seed
    data: Data
    group: Group
    step: int  # the step the weights are from


def load_config(run_dir: str | Path) -> Config:
    """The typed config of a run directory (a single run's, or one seed's of an ensemble)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{str(run_dir)!r} is not an eqtrain run directory: no {CONFIG_FILE}")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path)))


def restore(run_dir: str | Path, device: str = "cpu") -> Restored:
    """The run's model (with the weights in weights.pt) on ``device``, its data and group."""
    run_dir = Path(run_dir)
    settings = validate(load_config(run_dir))
    cfg = settings.config
    data = load_dataset(cfg.dataset).to(device, settings.dtype)
    group = Group.from_name(cfg.group.name)
    path = run_dir / WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{str(run_dir)!r} has no {WEIGHTS_FILE}: the run did not finish")
    saved = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise ValueError(f"{path} is not an eqtrain weights file")
    # A run of phases may have ended in any parametrization: rebuild the one θ was saved from.
    constrain = saved.get("constrain", settings.phases[-1].dyn.constrain)
    model = build_model(cfg.model, group, data.image_shape, data.n_classes, constrain, settings.dtype).to(device)
    # Files of eqtrain 0.1 hold θ without the seed axis.
    own = model.state_dict()
    model.load_state_dict(
        {k: v[None] if k in own and v.dim() < own[k].dim() else v for k, v in saved["state_dict"].items()}
    )
    return Restored(settings, model, data, group, int(saved.get("step", 0)))
