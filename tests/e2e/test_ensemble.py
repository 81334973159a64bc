"""seeds=N: N seeds of one config trained by the one loop as one batched network equal N separate runs."""

import json

import pytest
import torch

from eqtrain.geometry.group import Group
from eqtrain.nets.cnn import build_model
from eqtrain.nets.init import initial_weights_of_seeds
from eqtrain.schema import ModelConfig
from eqtrain.training.step import train_step

from ..helpers import fast_first, kill_and_resume, make_config, rel, scalars
from ..helpers import train_config as train

BASE = ("dataset.train_limit=100", "dataset.test_limit=30", "epochs=2", "lr=0.001")


@pytest.mark.parametrize(
    "overrides",
    fast_first(
        [
            (("mode=augreg",),),
            (("mode=augmented", "augment=orbit"),),
            (("mode=nomreg", "model.support=cross", "model.parametrization=basis"),),
        ],
        ids=["augreg-random", "augmented-orbit", "nomreg-basis"],
    ),
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


@pytest.mark.slow
def test_ensemble_float64_is_exact_to_round_off(tmp_path):
    train(make_config(*BASE, "lr=0.05", "dtype=float64", "seeds=2"), tmp_path / "e")
    train(make_config(*BASE, "lr=0.05", "dtype=float64", "seed=1"), tmp_path / "a")
    assert rel(load(tmp_path / "e" / "seed=1"), load(tmp_path / "a")) <= 1e-12


def load(d):
    return torch.load(d / "weights.pt", weights_only=True)["weights"]


@pytest.mark.slow
def test_an_ensemble_with_phases_and_a_twin_equals_single_runs(tmp_path):
    """Phases (equivariant, then orbit-augmented) and the twin in an ensemble: each seed's weights,
    twin distance and switch equal its own run's to round-off in float64 (≤1e-12 relative)."""
    common = (
        *BASE,
        "dtype=float64",
        "lr=0.01",
        "twin=true",
        "+phases=[{mode:equivariant,epochs:1},{mode:augmented,epochs:1,augment:orbit}]",
    )
    train(make_config(*common, "seed=3", "seeds=2"), tmp_path / "e")
    for seed in (3, 4):
        train(make_config(*common, f"seed={seed}"), tmp_path / f"a{seed}")
        together, alone = tmp_path / "e" / f"seed={seed}", tmp_path / f"a{seed}"
        assert rel(load(together), load(alone)) <= 1e-12
        steps_e, twin_e = scalars(together)["twin/dist"]
        steps_a, twin_a = scalars(alone)["twin/dist"]
        assert steps_e == steps_a == list(range(20))
        assert twin_e == pytest.approx(twin_a, rel=1e-6, abs=1e-12)  # (logged in float32)
        assert max(twin_a) > 0  # phase 2 leaves the twin: the check has teeth


@pytest.mark.slow
def test_analyze_writes_every_seeds_stability(tmp_path):
    train(
        make_config(*BASE, "seeds=2", "max_steps=3", "analyze=true", "analyze_samples=8", "analyze_iterations=4"),
        tmp_path / "e",
    )
    for seed in (0, 1):
        result = json.loads((tmp_path / "e" / f"seed={seed}" / "stability.json").read_text())
        assert result["step"] == 3 and result["samples"] == 8


def test_a_diverging_seed_is_frozen_and_the_others_go_on():
    model = build_model(ModelConfig(), Group.from_name("c4"), (1, 28, 28), 10, False, n_seeds=2)
    model.set_weights(initial_weights_of_seeds(model, "standard", 0.0, [0, 1]))
    before = [m.theta.detach().clone() for m in model.maps]
    x, y = torch.rand(2, 4, 1, 28, 28), torch.randint(0, 10, (2, 4))
    x[1, 0, 0, 0, 0] = float("nan")  # seed 1's batch poisons its loss
    result = train_step(model, x, y, 0.1, 0.0, 1.0, torch.ones(2, dtype=torch.bool))
    assert torch.isfinite(result.loss[0]) and not torch.isfinite(result.loss[1])
    assert result.running.tolist() == [True, False]
    assert not torch.equal(model.maps[0].theta[0], before[0][0])  # seed 0 moved
    assert all(torch.equal(m.theta[1], b[1]) for m, b in zip(model.maps, before))  # seed 1 frozen, finite


LONG = [
    "dataset.train_limit=300",
    "dataset.test_limit=50",
    "epochs=2",
    "batch_size=1",
    "mode=augreg",
    "lr=0.01",
    "seeds=2",
]


@pytest.mark.slow
def test_an_ensemble_killed_and_resumed_is_bitwise_identical(tmp_path):
    """seeds=N is a run like any other: SIGTERM mid-epoch, resume=true, every seed bitwise as uninterrupted."""
    reference, killed = kill_and_resume(tmp_path, LONG, steps_per_epoch=300)
    for seed in (0, 1):
        ref, resumed = reference / f"seed={seed}", killed / f"seed={seed}"
        assert (resumed / "metrics.json").read_text() == (ref / "metrics.json").read_text()
        assert all(torch.equal(a, b) for a, b in zip(load(ref), load(resumed)))
        assert scalars(resumed) == scalars(ref)  # no duplicated or missing steps, the same values


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
