"""``analyze=true``: the stability analysis of SPEC §5.4 and §12.4 at every seed's final weights."""

from __future__ import annotations

from pathlib import Path

from ..analysis.stability import analyze_run
from ..data.datasets import Data
from ..geometry.group import Group
from .settings import Settings
from .state import RunState


def optimizer_of_run(settings: Settings, lr: float | None = None) -> dict[str, object]:
    """What the window is computed for (SPEC §12.4): the run's optimizer, its γ, and the step size with a
    line saying where it came from — the run's ``lr``, the peak of its schedule, where the window is
    narrowest (γ_max grows as the step decays), unless ``lr`` is given (eqtrain-analyze --lr)."""
    cfg = settings.config
    if lr is not None:
        source = "--lr"
    elif cfg.lr_schedule != "constant":
        source = f"the run's lr, the peak of lr_schedule={cfg.lr_schedule}: the window widens as the step decays"
    elif cfg.lr_warmup_epochs:
        source = f"the run's lr, after lr_warmup_epochs={cfg.lr_warmup_epochs:g}"
    else:
        source = "the run's lr"
    return {
        "lr": cfg.lr if lr is None else lr,
        "lr_source": source,
        "rule": settings.update_rule,
        "gamma": settings.gamma,
    }


def analyze_seeds(
    settings: Settings, state: RunState, data: Data, group: Group, dirs: list[Path], results: list[dict]
) -> None:
    """γ_crit and the window of every seed that finished with finite weights, into its own directory."""
    cfg = settings.config
    for k, (d, result) in enumerate(zip(dirs, results)):
        if result["status"] != "completed":
            continue
        analyze_run(
            state.model, data, group, run_dir=d, step=int(result["steps"]), samples=cfg.analyze_samples,
            iterations=cfg.analyze_iterations, data_scale=cfg.data_scale, seed_index=k, **optimizer_of_run(settings),
        )  # fmt: skip
