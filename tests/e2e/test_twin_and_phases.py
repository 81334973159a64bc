"""The equivariant twin, phases, and what a finished or checkpointed run holds (SPEC §7's twin distance, phase switches)."""

import pytest
import torch

from ..helpers import TINY, make_config


def test_twin_of_an_equivariant_run_is_itself(run_train):
    _, twin = run_train(*TINY, "mode=equivariant", "twin=true", "max_steps=10").scalars("twin/dist")
    assert twin == [0.0] * 10


def test_twin_tracks_orbit_augmented_training_from_e(run_train):
    """SPEC §5.2 over a short horizon in float64 (the dynamics amplify round-off)."""
    run = run_train(
        *TINY,
        "mode=augmented",
        "augment=orbit",
        "init.scheme=perturbed_equivariant",
        "init.sigma=0",
        "twin=true",
        "max_steps=30",
        "lr=0.01",
        "dtype=float64",
    )
    _, twin = run.scalars("twin/dist")
    assert max(twin) < 1e-12


def test_twin_separates_from_nominal_training(run_train):
    _, twin = run_train(
        *TINY, "mode=nominal", "init.scheme=perturbed_equivariant", "init.sigma=0", "twin=true", "max_steps=10"
    ).scalars("twin/dist")
    assert twin[0] == 0.0 and twin[-1] > 1e-3


def test_a_phase_switch_keeps_weights_and_biases(run_train):
    """Two phases of the same mode equal one run of both epochs: the switch carries A and the biases."""
    phased = run_train(*TINY, "model.bias=true", "+phases=[{mode:nominal,epochs:1},{mode:nominal,epochs:1}]")
    plain = run_train(*TINY, "model.bias=true", "mode=nominal", "epochs=2")
    a, b = (torch.load(r.dir / "weights.pt", weights_only=True)["state_dict"] for r in (phased, plain))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(a[f"biases.{i}"].abs().max() > 0 for i in range(3))  # the biases did train


def test_analyze_restores_a_run_that_ended_inside_a_phase(tmp_path):
    from eqtrain.training.finished_run import restore

    from ..helpers import train_config as train

    train(
        make_config(*TINY, "+phases=[{mode:equivariant,epochs:1},{mode:augmented,epochs:1}]", "max_steps=3"), tmp_path
    )
    restored = restore(tmp_path)
    saved = torch.load(tmp_path / "weights.pt", weights_only=True)["weights"]
    assert all(torch.allclose(a[0], b) for a, b in zip(restored.model.weights(), saved))


def test_restore_is_exact_for_the_basis_parametrization(tmp_path):
    from eqtrain.training.finished_run import restore

    from ..helpers import train_config as train

    train(make_config(*TINY, "model.parametrization=basis", "model.support=cross", "max_steps=3"), tmp_path)
    saved = torch.load(tmp_path / "weights.pt", weights_only=True)["weights"]
    assert all(torch.equal(a[0], b) for a, b in zip(restore(tmp_path).model.weights(), saved))


@pytest.mark.parametrize("coordinates", ["auto", "orthonormal"])
def test_restore_rebuilds_the_equivariant_coordinates_the_run_trained(tmp_path, coordinates):
    """Adam trains E's orbit values (tied, SPEC §12.3) unless told otherwise: eqtrain-analyze's model holds the
    weights the run ended with in either case (the other coordinates would scale every orbit by √|o|)."""
    from eqtrain.training.finished_run import restore

    from ..helpers import train_config as train

    overrides = ("mode=equivariant", "optimizer=adam", "lr=1e-3", f"model.equivariant_coordinates={coordinates}")
    train(make_config(*TINY, *overrides, "max_steps=3"), tmp_path)
    restored = restore(tmp_path)
    assert restored.model.coordinates == ("tied" if coordinates == "auto" else "orthonormal")
    saved = torch.load(tmp_path / "weights.pt", weights_only=True)["weights"]
    assert all(torch.equal(a[0], b) for a, b in zip(restored.model.weights(), saved))


@pytest.mark.slow
def test_checkpoints_load_weights_only(run_train):
    run = run_train(*TINY, "max_steps=3")
    state = torch.load(run.dir / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and isinstance(state["config_hash"], str)
