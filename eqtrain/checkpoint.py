"""Checkpoints: everything needed to continue a run bit for bit (robustness issue).

A checkpoint holds the parameters of the model (and of the twin; plain SGD has no state), every
random generator's state, the current epoch's data order and the position in it, the step, the
phase and a hash of the config. It is written atomically (temp file + rename), so an interrupted
write never leaves a broken checkpoint, and loaded with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from omegaconf import OmegaConf

CHECKPOINT_FILE = "checkpoint.pt"
# Keys that do not change the numbers a run produces, so a resume may change them.
_NOT_HASHED = ("resume", "force_resume", "threads", "analyze", "analyze_samples", "analyze_iterations")


def config_hash(cfg) -> str:
    container = OmegaConf.to_container(cfg, resolve=True)
    for key in _NOT_HASHED:
        container.pop(key, None)
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(container)).encode()).hexdigest()[:16]


def save_checkpoint(run_dir: Path, state: dict) -> None:
    path = run_dir / CHECKPOINT_FILE
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(run_dir: Path, expected_hash: str, force: bool = False) -> dict:
    path = run_dir / CHECKPOINT_FILE
    if not path.exists():
        raise FileNotFoundError(f"resume: no {CHECKPOINT_FILE} in {str(run_dir)!r}; nothing to resume")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["config_hash"] != expected_hash and not force:
        raise ValueError(
            f"resume: the checkpoint in {str(run_dir)!r} was written by a different config "
            f"(hash {state['config_hash']} != {expected_hash}); resume with the same overrides, "
            "or set force_resume=true to continue anyway"
        )
    return state
