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


@pytest.mark.parametrize("override", ["twin=true", "analyze=true", "resume=true"])
def test_ensemble_refuses_what_it_does_not_support(tmp_path, override):
    with pytest.raises(ConfigError, match=f"seeds=2 does not support {override.split('=')[0]}"):
        train(make_config(*BASE, "seeds=2", override), tmp_path)


def test_a_diverging_seed_is_frozen_and_the_others_go_on():
    from eqtrain.config import ModelConfig
    from eqtrain.ensemble import SeedEnsemble
    from eqtrain.group import Group
    from eqtrain.init import initial_weights
    from eqtrain.model import build_model

    model = build_model(ModelConfig(), Group.from_name("c4"), (1, 28, 28), 10, False)
    starts = [initial_weights(model, "standard", 0.0, s) for s in range(2)]
    ensemble = SeedEnsemble(model, starts, lr=0.1, gamma=0.0, data_scale=1.0)
    before = [t.clone() for t in ensemble.thetas]
    x, y = torch.rand(2, 4, 1, 28, 28), torch.randint(0, 10, (2, 4))
    x[1, 0, 0, 0, 0] = float("nan")  # seed 1's batch poisons its loss
    loss, _ = ensemble.step(x, y)
    assert torch.isfinite(loss[0]) and not torch.isfinite(loss[1])
    assert ensemble.alive.tolist() == [True, False]
    assert not torch.equal(ensemble.thetas[0][0], before[0][0])  # seed 0 moved
    assert all(torch.equal(t[1], b[1]) for t, b in zip(ensemble.thetas, before))  # seed 1 frozen, finite


def test_a_diverged_seed_is_recorded_as_its_own_run_would_be(tmp_path):
    """Same status, step, epoch count and finite last state as the seed run alone."""
    bad = ("experiment=smoke", "max_steps=null", "epochs=2", "mode=nomreg", "gamma=1000", "lr=1")
    train(make_config(*bad, "seeds=2"), tmp_path / "e")
    train(make_config(*bad, "seed=1"), tmp_path / "a")
    together, alone = (
        json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "e" / "seed=1", tmp_path / "a")
    )
    assert together["status"] == alone["status"] == "diverged"
    assert (together["steps"], together["epochs_done"]) == (alone["steps"], alone["epochs_done"])
    saved = torch.load(tmp_path / "e" / "seed=1" / "weights.pt", weights_only=True)
    assert saved["step"] == alone["steps"] and all(torch.isfinite(a).all() for a in saved["weights"])
