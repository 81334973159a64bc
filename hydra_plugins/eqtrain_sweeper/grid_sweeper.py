"""Hydra's BasicSweeper, minus jobs that repeat another exactly (the logic: eqtrain.cli.sweeper)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override

from eqtrain.cli.errors import fail
from eqtrain.cli.sweeper import memory_problem, named_by_what_differs, unknown_exclude_keys, without_repeats

log = logging.getLogger(__name__)
LOCAL_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def _entry(entry: Any) -> dict:
    """One ``exclude`` entry as a dict; anything else stops the sweep with one line (exit 2), before Hydra's
    instantiation error (four lines, exit 1) could."""
    if not isinstance(entry, Mapping) or not entry:
        fail(
            f"hydra.sweeper.exclude: {entry!r} is not valid: each entry maps keys to a value or a list of "
            "values, e.g. [{model: z2cnn, mode: [equivariant, augreg]}]"
        )
    return dict(entry)


class GridSweeper(BasicSweeper):
    def __init__(
        self, max_batch_size: Optional[int], params: Optional[dict] = None, exclude: Optional[list] = None
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.exclude = [_entry(entry) for entry in exclude or ()]

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.default_mode = config.mode.name if "mode" in config else None
        self.dirname_excluded = list(config.hydra.job.config.override_dirname.exclude_keys)

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        problem = unknown_exclude_keys(jobs, self.exclude)
        if problem:
            fail(problem)
        kept = without_repeats(jobs, getattr(self, "default_mode", None), self.exclude)
        if len(kept) < len(jobs):
            log.info(
                "sweep: %d jobs (%d dropped: excluded, or gamma does not change a mode without a regularizer)",
                len(kept),
                len(jobs) - len(kept),
            )
        self.check_memory(kept)
        kept = named_by_what_differs(kept, getattr(self, "dirname_excluded", ()))
        return list(BasicSweeper.split_overrides_to_chunks(kept, max_batch_size))

    def check_memory(self, jobs: list[list[str]]) -> None:
        """Where the jobs run here one after another (Hydra's basic launcher), each must fit in the memory left:
        one that cannot is refused in one line before any job starts or the sweep directory is made. Under
        another launcher (SLURM) each job checks its own machine's memory at its start."""
        context = getattr(self, "hydra_context", None)
        if context is None or self.config.hydra.launcher.get("_target_") != LOCAL_LAUNCHER:
            return
        for job in jobs:
            problem = memory_problem(context.config_loader.load_sweep_config(self.config, list(job)))
            if problem:
                fail(f"the sweep's job {','.join(job)}: {problem}; no job was started")
