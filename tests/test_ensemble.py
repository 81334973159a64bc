"""seeds=N: N seeds trained as one vectorised ensemble equal N separate runs (speed issue)."""

import json

import pytest
import torch

from eqtrain.settings import ConfigError
from eqtrain.train import train

from .conftest import make_config

BASE = ("dataset.train_limit=100", "dataset.test_limit=30", "epochs=2", "lr=0.001")


def rel(a, b) -> float:
    return (sum((x - y).pow(2).sum() for x, y in zip(a, b)) / sum(y.pow(2).sum() for y in b)).sqrt().item()


@pytest.mark.parametrize(
    "overrides",
    [
        ("mode=augreg",),
        ("mode=augmented", "augment=orbit"),
        ("mode=nomreg", "model.support=cross", "model.parametrization=basis"),
    ],
    ids=["augreg-random", "augmented-orbit", "nomreg-basis"],
)
def test_ensemble_matches_sequential_runs(tmp_path, overrides):
    """≤1e-5 relative in float32 at the paper's lr over 20 steps (larger steps amplify round-off, SPEC §5.2)."""
    ensemble_dir = tmp_path / "ensemble"
    summary = train(make_config(*BASE, *overrides, "seed=4", "seeds=3"), ensemble_dir)
    assert summary["status"] == "completed" and len(summary["runs"]) == 3
    for seed in (4, 5, 6):
        alone = tmp_path / f"alone{seed}"
        train(make_config(*BASE, *overrides, f"seed={seed}"), alone)
        together = ensemble_dir / f"seed={seed}"
        load = lambda d: torch.load(d / "weights.pt", weights_only=True)["weights"]  # noqa: E731
        assert rel(load(together), load(alone)) <= 1e-5
        a, b = (json.loads((d / "metrics.json").read_text()) for d in (together, alone))
        assert a["hparams"] == b["hparams"] and a["steps"] == b["steps"] == 20
        assert a["dist_to_E/total"] == pytest.approx(b["dist_to_E/total"], rel=1e-4)


def test_ensemble_writes_each_seeds_curves_like_a_run(run_train, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(make_config(*BASE, "seeds=2", "log_every=2"), tmp_path / "e")
    alone = run_train(*BASE, "seed=1", "log_every=2")

    def curves(d):
        acc = EventAccumulator(str(d), size_guidance={"scalars": 0})
        acc.Reload()
        return {t: [e.step for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}

    assert curves(tmp_path / "e" / "seed=1") == curves(alone.dir)


def test_ensemble_float64_is_exact_to_round_off(tmp_path):
    train(make_config(*BASE, "lr=0.05", "dtype=float64", "seeds=2"), tmp_path / "e")
    train(make_config(*BASE, "lr=0.05", "dtype=float64", "seed=1"), tmp_path / "a")
    load = lambda d: torch.load(d / "weights.pt", weights_only=True)["weights"]  # noqa: E731
    assert rel(load(tmp_path / "e" / "seed=1"), load(tmp_path / "a")) <= 1e-12


@pytest.mark.parametrize("override", ["twin=true", "analyze=true", "resume=auto"])
def test_ensemble_refuses_what_it_does_not_support(tmp_path, override):
    with pytest.raises(ConfigError, match=f"seeds=2 does not support {override.split('=')[0]}"):
        train(make_config(*BASE, "seeds=2", override), tmp_path)
