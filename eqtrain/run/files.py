"""A run directory's files: their names, and how each is written (atomically) and recognised.

A run directory holds ``config.yaml`` (the resolved config), the TensorBoard event file(s),
``metrics.json`` (final metrics, status, hparams), ``weights.pt`` (the final weights A and θ),
``checkpoint.pt`` (to resume) and, after an analysis, ``stability.json``. An ensemble of N seeds
writes one such directory per seed (``seed=<s>/``) and one checkpoint for all of them.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import time
from pathlib import Path

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "weights.pt"
CHECKPOINT_FILE = "checkpoint.pt"
STABILITY_FILE = "stability.json"
EVENTS_GLOB = "events.out.tfevents.*"


def seed_dir(run_dir: Path, seed: int, seeds: int) -> Path:
    """Where one seed's files go: the run directory itself for a single run, ``seed=<s>/`` in an ensemble."""
    return run_dir if seeds == 1 else run_dir / f"seed={seed}"


def write_atomic(path: Path, write) -> None:
    """``write(tmp)`` then rename over ``path``: a reader never sees half a file, a full disk leaves the old one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run_dirs_below(root: Path) -> list[Path]:
    """Every run directory at or below ``root`` — one holding an event file — sorted: a single run, an
    ensemble's ``seed=<s>/``, a sweep's jobs. Symbolic links to directories are followed (a directory of
    links to runs is a sweep too), each real directory once. The one way eqtrain-plot and
    eqtrain-analyze find runs."""
    found, seen = set(), set()
    for here, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        if any(fnmatch.fnmatch(f, EVENTS_GLOB) for f in files + dirs):
            found.add(Path(here))
    return sorted(found)


def output_dir_problem(directory: str | Path) -> str | None:
    """Why a run cannot write into ``directory`` (created if missing: parents too), or None when it can."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return err.strerror or str(err)
    return writable_problem(directory)


def writable_problem(directory: str | Path) -> str | None:
    """Why files cannot be created in ``directory`` (the system's reason), or None when they can."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        return err.strerror or str(err)
    return None


def write_json(path: str | Path, payload: dict) -> None:
    """Write JSON atomically. Non-finite floats become the strings "nan" / "inf" / "-inf"."""
    text = json.dumps(_finite(payload), indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_atomic(Path(path), lambda tmp: tmp.write_text(text))


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def save_weights(path: Path, payload: dict) -> None:
    """weights.pt: the final weights A (a list of (out, in, s) tensors, layer names alongside) and θ."""
    import torch  # here, not at the top: the command line reads these names before torch is needed

    write_atomic(path, lambda tmp: torch.save(payload, tmp))


def holds_run(run_dir: Path) -> bool:
    """Whether a directory already holds (part of) a run: its metrics or its curves."""
    return (run_dir / METRICS_FILE).exists() or any(run_dir.glob(EVENTS_GLOB))


def set_aside(run_dir: Path) -> Path:
    """Move a run directory's eqtrain files into a new ``stale-<time>/`` folder inside it.

    Renamed so that neither TensorBoard nor ``eqtrain-plot`` mistakes them for a run.
    """
    stale = run_dir / f"stale-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9}"
    stale.mkdir()
    for path in [*run_dir.glob(EVENTS_GLOB), *(run_dir / f for f in (METRICS_FILE, WEIGHTS_FILE))]:
        if path.exists():
            path.rename(stale / (path.name.replace("tfevents", "stale") + ".stale"))
    return stale
