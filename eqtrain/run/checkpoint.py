"""Checkpoints: the run's whole state, written so that neither a crash nor a damaged file loses the run.

The state (``RunState.state_dict()``: every seed's parameters, every random generator, the epoch's
data order and the position in it, the step, the phase, a hash of the config) is written
atomically (temp file + rename). The previous checkpoint is kept as ``checkpoint.prev.pt``: if the
latest one turns out unreadable (a truncated copy, a full disk, a foreign file), resuming falls
back to the previous one and says so. Loaded with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path

import torch

from .files import CHECKPOINT_FILE, write_atomic

log = logging.getLogger(__name__)

PREVIOUS_FILE = "checkpoint.prev.pt"


class CheckpointError(ValueError):
    """No usable checkpoint: missing, unreadable, or written by another config."""


def save_checkpoint(run_dir: Path, state: dict) -> None:
    path = run_dir / CHECKPOINT_FILE

    def write(tmp: Path) -> None:
        torch.save(state, tmp)
        if path.exists():  # keep the last good one until the new one is complete
            os.replace(path, run_dir / PREVIOUS_FILE)

    write_atomic(path, write)


def _read(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(
            f"{path} is damaged or not an eqtrain checkpoint ({' '.join(str(err).split())[:120]})"
        ) from err
    if not isinstance(state, dict) or "config_hash" not in state:
        raise CheckpointError(f"{path} is not an eqtrain checkpoint (no config hash)")
    return state


def load_checkpoint(run_dir: Path, expected_hash: str, force: bool = False) -> dict:
    """The latest readable checkpoint of ``run_dir`` (falling back to the previous one, with a warning)."""
    path, previous = run_dir / CHECKPOINT_FILE, run_dir / PREVIOUS_FILE
    if not path.exists() and not previous.exists():
        raise CheckpointError(f"resume: no {CHECKPOINT_FILE} in {str(run_dir)!r}; nothing to resume")
    try:
        state = _read(path)
    except CheckpointError as err:
        if not previous.exists():
            raise CheckpointError(f"resume: {err}; no previous checkpoint to fall back to") from err
        log.warning("resume: %s; falling back to the previous checkpoint %s", err, previous.name)
        state = _read(previous)
    if state["config_hash"] != expected_hash and not force:
        raise CheckpointError(
            f"resume: the checkpoint in {str(run_dir)!r} was written by a different config "
            f"(hash {state['config_hash']} != {expected_hash}); resume with the same overrides, "
            "or set force_resume=true to continue anyway"
        )
    return state
