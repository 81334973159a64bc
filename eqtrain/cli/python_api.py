"""The same run from Python: ``eqtrain.train(["mode=augreg", "gamma=0.1"])`` in a notebook or a script.

It composes the config exactly as the command line does (Hydra's compose API over the same
``configs/`` and schema), checks it the same way, and raises the command line's one-line message
as an exception (``ConfigError``, a ``ValueError``) instead of printing it and exiting. Importing
it is cheap: torch loads when a run starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..run.files import output_dir_problem
from .train import message_of, out_of_memory, precheck, settings_of, unwritable_output


class ConfigError(ValueError):
    """A bad override, value or input file: the message is the command line's one line."""


@dataclass(frozen=True)
class RunResult:
    """What a run returns: its summary (a seed's metrics, or an ensemble's mean with every seed's
    under ``"runs"``) and the directory it wrote."""

    summary: dict
    run_dir: Path


def train(overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> RunResult:
    """Train one run, as ``eqtrain OVERRIDES`` would (no sweeps: call it once per job).

    ``run_dir``: where to write; by default ``outputs/runs/<time>`` under the working directory,
    as the command line does. ``resume=true`` continues the run in ``run_dir``.
    """
    overrides = list(overrides)
    problem = precheck(overrides)
    if problem is None and any(o.startswith(("-", "hydra.", "hydra/")) for o in overrides):
        problem = "flags and hydra.* overrides are the command line's; pass config keys only (the run directory is the run_dir argument)"
    if problem:
        raise ConfigError(problem)
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_module(config_module="eqtrain.configs", version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        settings = settings_of(cfg)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise ConfigError(message_of(err)) from None
    if run_dir is None:
        run_dir = Path("outputs/runs") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    problem = output_dir_problem(run_dir)  # the command line's check of hydra.run.dir, for the run_dir argument
    if problem:
        raise ConfigError(unwritable_output("run_dir", run_dir, problem))
    from ..training.loop import train as train_loop

    try:
        summary = train_loop(settings, run_dir, overrides)
    except ValueError as err:  # missing or damaged data, a refused resume, a run that cannot fit
        raise ConfigError(message_of(err)) from None
    except (MemoryError, RuntimeError) as err:  # an allocation that failed: the command line's line
        oom = out_of_memory(err)
        if oom is None:
            raise
        raise ConfigError(oom) from None
    return RunResult(summary, Path(run_dir))
