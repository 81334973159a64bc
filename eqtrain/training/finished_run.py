"""Rebuild what a finished run trained — config, data, group and model with its final weights.

A run directory is read as it was written (run/files.py): ``config.yaml`` (every key of the
schema), ``weights.pt`` (θ and A) and ``metrics.json`` (the hparams). Anything else — a damaged,
empty or foreign file, a sweep or ensemble directory instead of one run — is a ``RestoreError``
with one line naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

from ..data.datasets import Data, load_dataset
from ..geometry.group import Group
from ..nets.cnn import EqCNN, build_model
from ..run.files import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, run_dirs_below
from ..schema import Config
from .settings import ConfigError, Settings, hparams_of, validate


class RestoreError(ValueError):
    """A run directory that cannot be restored; the message names the file, the problem and the remedy."""


@dataclass
class Restored:
    settings: Settings
    model: EqCNN  # one seed
    data: Data
    group: Group
    step: int  # the step the weights are from


def check_run_dir(run_dir: Path) -> None:
    """One line if ``run_dir`` is not one run's directory (missing, a file, a sweep, an ensemble's job)."""
    if not run_dir.exists():
        raise RestoreError(
            f"{str(run_dir)!r} does not exist (no config.yaml, no weights.pt); pass a finished run directory"
        )
    if not run_dir.is_dir():
        raise RestoreError(
            f"{str(run_dir)!r} is a file, not a run directory; pass the directory that holds it ({str(run_dir.parent)!r})"
        )
    if (run_dir / CONFIG_FILE).exists():
        return
    runs = [p for p in run_dirs_below(run_dir) if p != run_dir]
    if runs:
        shown = ", ".join(str(p.relative_to(run_dir)) for p in runs[:3]) + (", ..." if len(runs) > 3 else "")
        raise RestoreError(
            f"{str(run_dir)!r} holds {len(runs)} runs ({shown}), not one: eqtrain-analyze takes one run directory, "
            f"e.g. {str(runs[0])!r}"
        )
    raise RestoreError(f"{str(run_dir)!r} is not an eqtrain run directory: no {CONFIG_FILE}")


def load_config(run_dir: str | Path) -> Config:
    """The typed config of a run directory (a single run's, or one seed's of an ensemble)."""
    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    path = run_dir / CONFIG_FILE
    remedy = "restore it from a copy, or retrain the run"
    try:
        text = path.read_text()
        loaded = OmegaConf.create(text)
    except UnicodeDecodeError as err:
        raise RestoreError(f"{path} is damaged (not text: {err.reason} at byte {err.start}); {remedy}") from err
    except YAMLError as err:
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise RestoreError(f"{path} is damaged (not valid YAML: {problem}, {_where(err)}); {remedy}") from err
    except OSError as err:
        raise RestoreError(f"cannot read {path} ({err.strerror or err})") from err
    if not text.strip():
        raise RestoreError(f"{path} is empty; {remedy}")
    if not isinstance(loaded, DictConfig):
        raise RestoreError(f"{path} is not an eqtrain config (a YAML list, not a mapping of keys)")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), loaded))
    except OmegaConfBaseException as err:
        detail = " ".join(str(err).split("\n")[0].split())
        raise RestoreError(
            f"{path} is damaged, foreign or from another eqtrain version ({detail}, key {err.full_key}); {remedy}"
        ) from err


def _where(err: YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    return f"line {mark.line + 1}" if mark is not None else "somewhere"


def check_against_metrics(run_dir: Path, settings: Settings) -> None:
    """config.yaml must describe the run metrics.json reports: a truncated or swapped config.yaml does not."""
    path = run_dir / METRICS_FILE
    try:
        recorded = json.loads(path.read_text()).get("hparams")
    except (OSError, ValueError, AttributeError):
        return  # no usable metrics.json (an interrupted run): nothing to compare with
    if not isinstance(recorded, dict):
        return
    config = hparams_of(settings.config, settings)
    differ = [k for k in config if k in recorded and _plain(config[k]) != _plain(recorded[k])]
    if differ:
        k = differ[0]
        raise RestoreError(
            f"{run_dir / CONFIG_FILE} does not describe the run of {path} ({k}={config[k]!r} in one, "
            f"{recorded[k]!r} in the other{f', and {len(differ) - 1} more keys' if len(differ) > 1 else ''}): "
            "it is damaged or from another run; restore it from a copy"
        )


def _plain(value: object) -> object:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def load_weights(run_dir: Path, device: str) -> dict:
    """weights.pt as saved (a dict with ``state_dict``), or a RestoreError saying what is wrong and what to do."""
    path = run_dir / WEIGHTS_FILE
    if not path.exists():
        raise RestoreError(f"{str(run_dir)!r} has no {WEIGHTS_FILE}: the run did not finish")
    remedy = _weights_remedy(run_dir)
    if not path.is_file():
        raise RestoreError(f"{path} is not a file; {remedy}")
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001  (torch.load raises a different type for each kind of damage)
        head = path.read_bytes()[:4] if path.stat().st_size else b""
        what = "empty" if not head else "a damaged torch file" if head == b"PK\x03\x04" else "not a torch file"
        raise RestoreError(f"{path} is {what} (torch.load: {type(err).__name__}); {remedy}") from err
    if not isinstance(saved, dict) or not isinstance(saved.get("state_dict"), dict):
        raise RestoreError(f"{path} is not an eqtrain weights file (no state_dict); {remedy}")
    return saved


def _weights_remedy(run_dir: Path) -> str:
    """What to do about a damaged weights.pt: the checkpoint at the end of the run holds the same θ."""
    for where in (run_dir, run_dir.parent):
        if (where / CHECKPOINT_FILE).is_file():
            return (
                f"rewrite it from the final checkpoint: rerun the run's command with resume={str(where)!r} "
                f"(its overrides are in {where / '.hydra' / 'overrides.yaml'})"
            )
    return "retrain the run"


def fit_weights(model: EqCNN, state: dict, path: Path, config: Path) -> dict:
    """The saved θ shaped for ``model``, or a RestoreError naming the first tensor that does not fit."""
    own = model.state_dict()
    # Files of eqtrain 0.1 hold θ without the seed axis.
    fitted = {k: v[None] if k in own and torch.is_tensor(v) and v.dim() < own[k].dim() else v for k, v in state.items()}
    for key, mine in own.items():
        theirs = fitted.get(key)
        problem = (
            "is missing"
            if theirs is None
            else "is not a tensor"
            if not torch.is_tensor(theirs)
            else f"has shape {tuple(theirs.shape)}, not {tuple(mine.shape)}"
            if theirs.shape != mine.shape
            else None
        )
        if problem:
            raise RestoreError(
                f"{path} does not fit the network of {config}: {key} {problem}; the two files are from different "
                "runs, or one is damaged"
            )
    extra = sorted(set(fitted) - set(own))
    if extra:
        raise RestoreError(
            f"{path} does not fit the network of {config}: unexpected {extra[0]}; it is from another run"
        )
    return fitted


def restore(run_dir: str | Path, device: str = "cpu", data_dir: str | None = None) -> Restored:
    """The run's model (with the weights in weights.pt) on ``device``, its data and group.

    ``data_dir`` overrides the run's ``dataset.data_dir`` (a relative one is relative to where it trained).
    """
    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    if data_dir is not None:
        cfg.dataset.data_dir = data_dir
    try:
        settings = validate(cfg)
    except ConfigError as err:
        raise RestoreError(f"{run_dir / CONFIG_FILE}: {err}") from err
    check_against_metrics(run_dir, settings)
    saved = load_weights(run_dir, device)  # before the data: a bad file costs no loading
    data = load_dataset(cfg.dataset).to(device, settings.dtype)
    group = Group.from_name(cfg.group.name)
    # A run of phases may have ended in any parametrization: rebuild the one θ was saved from.
    constrain = saved.get("constrain", settings.phases[-1].dyn.constrain)
    coordinates = saved.get("coordinates") or settings.coordinates  # E's: orthonormal or tied (SPEC §12.3)
    model = build_model(
        cfg.model, group, data.image_shape, data.n_classes, constrain, settings.dtype, coordinates=coordinates
    ).to(device)
    model.load_state_dict(fit_weights(model, saved["state_dict"], run_dir / WEIGHTS_FILE, run_dir / CONFIG_FILE))
    return Restored(settings, model, data, group, int(saved.get("step", 0)))
