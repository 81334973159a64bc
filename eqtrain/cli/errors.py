"""How every eqtrain command stops on a user's error: one line on stderr, exit status 2."""

from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf

# What a user can fix: a bad value (ConfigError, DataUnavailable and CheckpointError are ValueErrors),
# a missing file, a full disk or an unwritable directory (OSError).
USER_ERRORS = (ValueError, OSError)


def fail(message: str, prog: str = "eqtrain") -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def settings_of(cfg: DictConfig):
    """The edge: Hydra's config as the typed schema, validated once (``training.settings.Settings``); a problem
    a user can fix raises one of ``USER_ERRORS``. (Here, not in cli.train, so the sweeper checks a job's config
    the same way.)"""
    from ..training.settings import validate

    return validate(OmegaConf.to_object(cfg))
