"""``analyze=true``: the stability analysis of SPEC §5.4 at every seed's final weights."""

from __future__ import annotations

from pathlib import Path

from ..analysis.stability import analyze_run
from ..data.datasets import Data
from ..geometry.group import Group
from .settings import Settings
from .state import RunState


def analyze_seeds(
    settings: Settings, state: RunState, data: Data, group: Group, dirs: list[Path], results: list[dict]
) -> None:
    """γ_crit and the window of every seed that finished with finite weights, into its own directory."""
    cfg = settings.config
    for k, (d, result) in enumerate(zip(dirs, results)):
        if result["status"] != "completed":
            continue
        analyze_run(
            state.model, data, group, cfg.lr, d, int(result["steps"]), None, cfg.analyze_samples,
            cfg.analyze_iterations, data_scale=cfg.data_scale, seed_index=k,
        )  # fmt: skip
