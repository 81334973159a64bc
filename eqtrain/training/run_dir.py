"""Where a run writes, and the checkpoint it continues from (``resume``), decided before anything is written."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..run.checkpoint import PREVIOUS_FILE, load_checkpoint
from ..run.files import CHECKPOINT_FILE, holds_run, seed_dir, set_aside
from ..run.machine import cpus_allowed
from .settings import ConfigError, Settings

log = logging.getLogger("eqtrain")


def open_run_dir(settings: Settings, run_dir: Path) -> tuple[Path, dict | None]:
    """The run directory and the checkpoint to resume from (None for a fresh start).

    ``resume``: null/false — a fresh run, refused in a directory that already holds one; true —
    this directory's checkpoint; a path — that directory's; auto — the checkpoint if there is
    one, else a fresh start (earlier files set aside). Sets the torch thread count: the run's,
    or on resume the interrupted run's (CPU kernels split sums by thread, so bitwise exactness
    needs the same count).
    """
    cfg = settings.config
    resume = cfg.resume
    if isinstance(resume, str) and resume != "auto":
        run_dir = Path(resume)
    has_checkpoint = (run_dir / CHECKPOINT_FILE).exists() or (run_dir / PREVIOUS_FILE).exists()
    resuming = resume is True or (isinstance(resume, str) and resume != "auto") or (resume == "auto" and has_checkpoint)
    ckpt = load_checkpoint(run_dir, settings.config_hash(), cfg.force_resume) if resuming else None
    if ckpt is None:
        for d in _seed_dirs_present(run_dir, cfg.seed, cfg.seeds):
            if not holds_run(d):
                continue
            if resume != "auto":
                raise ConfigError(f"run directory {str(d)!r} already holds a run; refusing to overwrite it")
            stale = set_aside(d)  # e.g. a requeued job killed before its first checkpoint
            log.warning("resume=auto: no checkpoint in %s; starting over (earlier files moved to %s)", d, stale)
    set_threads(cfg.threads, ckpt.get("threads") if ckpt is not None else None)
    return run_dir, ckpt


def _seed_dirs_present(run_dir: Path, first: int, seeds: int) -> list[Path]:
    """The directories of this run's seeds that exist already: what is there is listed, not every seed's
    name tried (a million seeds would cost a million look-ups before the memory check refuses them)."""
    if seeds == 1:
        return [run_dir]
    if not run_dir.is_dir():
        return []
    present = []
    for entry in run_dir.iterdir():
        name = entry.name.removeprefix("seed=")
        if name != entry.name and name.lstrip("-").isdigit() and first <= int(name) < first + seeds:
            present.append(seed_dir(run_dir, int(name), seeds))
    return present


def set_threads(threads: int | None, saved: int | None) -> None:
    """``threads``, else at most one per CPU this process may use (taskset, SLURM's cgroups); a resume's saved count."""
    if threads:
        torch.set_num_threads(threads)
    elif torch.get_num_threads() > cpus_allowed():
        torch.set_num_threads(cpus_allowed())
    if saved is None or saved == torch.get_num_threads():
        return
    if threads:  # the user's explicit choice wins, but say what it costs
        log.warning("threads=%d differs from the interrupted run's %d: not bitwise exact", threads, saved)
    else:
        log.warning("resuming with %d torch threads, as the interrupted run had", saved)
        torch.set_num_threads(saved)
