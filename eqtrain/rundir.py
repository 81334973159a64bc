"""Rebuild what a finished run trained — config, data, group and model with its final weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .config import Config
from .data import Data, load_dataset
from .group import Group
from .model import EqCNN, build_model
from .settings import validate
from .train import CONFIG_FILE, WEIGHTS_FILE


@dataclass
class Restored:
    cfg: DictConfig
    model: EqCNN
    data: Data
    group: Group
    gamma: float  # the γ the run used (0 for modes without regularizer)


def load_config(run_dir: str | Path) -> DictConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{str(run_dir)!r} is not an eqtrain run directory: no {CONFIG_FILE}")
    return OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path))


def restore(run_dir: str | Path, device: str = "cpu") -> Restored:
    """The run's model (with the weights in weights.pt) on ``device``, its data and group."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    settings = validate(cfg)
    data = load_dataset(cfg.dataset).to(device, settings.dtype)
    group = Group.from_name(cfg.group.name)
    path = run_dir / WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{str(run_dir)!r} has no {WEIGHTS_FILE}: the run did not finish")
    saved = torch.load(path, map_location=device, weights_only=True)
    # A run of phases may have ended in any parametrization: rebuild the one θ was saved from.
    constrain = saved.get("constrain", settings.phases[-1].dyn.constrain)
    model = build_model(cfg.model, group, data.image_shape, data.n_classes, constrain, settings.dtype).to(device)
    model.load_state_dict(saved["state_dict"])
    return Restored(cfg, model, data, group, settings.gamma)
