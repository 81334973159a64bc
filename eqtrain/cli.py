"""The ``eqtrain`` command: Hydra composes the config, ``train`` runs it.

Errors a user can fix (a bad value, missing data files, an unusable output directory) end a
single run with one line on stderr, ``eqtrain: error: ...``, and exit status 2. In a sweep
the job fails but the launcher goes on with the others; Hydra reports the failure at the end.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

import eqtrain  # noqa: F401  (registers the structured config schema)

from .data import DataUnavailable

log = logging.getLogger("eqtrain")
USER_ERRORS = (ValueError, DataUnavailable, FileNotFoundError)


def fail(message: str) -> None:
    print(f"eqtrain: error: {message}", file=sys.stderr)
    sys.exit(2)


class OutputDirCheck(Callback):
    """Refuse an output directory that cannot be written, before Hydra tries to create it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check("hydra.sweep.dir", config.hydra.sweep.dir)

    @staticmethod
    def _check(key: str, directory: str) -> None:
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as err:
            fail(f"{key}={directory!r} is not writable ({err.strerror}); pass a writable {key}=...")


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from .train import train  # torch is imported only once Hydra has parsed the command line

    try:
        result = train(cfg, HydraConfig.get().runtime.output_dir)
    except USER_ERRORS as err:
        log.error("%s", err)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        fail(str(err))
    return result.get("acc/test_orbit")


if __name__ == "__main__":
    main()
