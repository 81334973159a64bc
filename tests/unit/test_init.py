"""Initial weights (SPEC §8) and the same start for every mode."""

import pytest
import torch

from eqtrain.geometry.group import Group
from eqtrain.nets.cnn import build_model
from eqtrain.nets.init import initial_weights
from eqtrain.training.modes import MODES

from ..helpers import fast_first, make_config


def model_for(mode: str, *overrides: str):
    cfg = make_config(f"mode={mode}", *overrides)
    return build_model(cfg.model, Group.from_name("c4"), (1, 28, 28), 10, MODES[mode].constrain)


@pytest.mark.parametrize("scheme", fast_first(["perturbed_equivariant", "standard"]))
def test_same_seed_same_start_for_every_mode(scheme):
    starts = {}
    for mode in MODES:
        model = model_for(mode)
        model.set_weights(initial_weights(model, scheme, 1e-3, seed=7))
        starts[mode] = [a[0].detach().double() for a in model.weights()]
    reference = starts["nominal"]
    for mode in ("augmented", "augreg", "nomreg"):
        assert all(torch.equal(a, b) for a, b in zip(starts[mode], reference))
    # The equivariant mode starts at Π_E(A₀).
    model = model_for("equivariant")
    for space, a_eq, a0 in zip(model.space, starts["equivariant"], reference):
        assert torch.allclose(a_eq, space.project_e(a0.float()).double(), atol=1e-6)


def test_different_seeds_differ():
    model = model_for("nominal")
    a = initial_weights(model, "standard", 0.0, seed=0)
    b = initial_weights(model, "standard", 0.0, seed=1)
    assert not torch.equal(a[0], b[0])


def test_perturbed_start_is_sigma_off_e_inside_l():
    """A₀ = A_eq + Π_{E⊥}Π_L ξ: its E⊥ part has norm ≈ σ·sqrt(dim L − dim E) and lies in L."""
    sigma = 1e-3
    model = model_for("nominal", "model.support=cross")
    a0 = initial_weights(model, "perturbed_equivariant", sigma, seed=0)
    perp_sq, codim = 0.0, 0
    for space, m, a in zip(model.space, model.maps, a0):
        space = space.double()
        perp = space.project_perp(a)
        perp_sq += perp.pow(2).sum().item()
        codim += m.channels[0] * m.channels[1] * (int(space.omega.sum()) - space.orbits_in_e)
        assert torch.all(a[..., ~space.omega] == 0)  # in L
    assert abs(perp_sq**0.5 / (sigma * codim**0.5) - 1) < 0.05  # chi distribution, codim ~ 7000


def test_sigma_zero_starts_on_e():
    model = model_for("nominal")
    a0 = initial_weights(model, "perturbed_equivariant", 0.0, seed=0)
    for space, a in zip(model.space, a0):
        assert space.double().project_perp(a).abs().max() < 1e-15


def test_bad_init_values_name_the_key():
    model = model_for("nominal")
    with pytest.raises(ValueError, match="init.scheme='xavier'"):
        initial_weights(model, "xavier", 0.0, 0)
    with pytest.raises(ValueError, match="init.sigma=-1"):
        initial_weights(model, "standard", -1.0, 0)
