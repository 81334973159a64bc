"""The ``eqtrain`` command: Hydra composes the config, ``train`` runs it."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import eqtrain  # noqa: F401  (registers the structured config schema)

from .data import DataUnavailable

log = logging.getLogger("eqtrain")


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from .train import train  # torch is imported only once Hydra has parsed the command line

    try:
        result = train(cfg, HydraConfig.get().runtime.output_dir)
    except (ValueError, DataUnavailable) as err:
        log.error("%s", err)
        print(f"eqtrain: error: {err}", file=sys.stderr)
        sys.exit(2)
    return result.get("acc/test_orbit")


if __name__ == "__main__":
    main()
