"""Exact projections in weight space (SPEC §2)."""

import itertools

import pytest
import torch

from eqtrain.geometry.group import GROUP_NAMES, Group
from eqtrain.geometry.layer_space import LayerSpace
from eqtrain.geometry.support import make_support

TOL = 1e-12  # float64 round-off on a few hundred entries

SUPPORTS = ["full", "cross", "skewed"]
CASES = list(itertools.product(GROUP_NAMES, SUPPORTS))


def space(group: str, support: str = "full", k: int = 3) -> LayerSpace:
    return LayerSpace(Group.from_name(group), k, k, make_support(support, k), dtype=torch.float64)


@pytest.mark.parametrize("group,support", CASES)
def test_pi_e_is_an_orthogonal_projection(group, support):
    s = space(group, support)
    a, b = torch.randn(2, 4, 3, 9, dtype=torch.float64)
    pa = s.project_e(a)
    assert torch.allclose(s.project_e(pa), pa, atol=TOL)  # idempotent
    assert abs((pa * b).sum() - (a * s.project_e(b)).sum()) < TOL  # self-adjoint
    assert torch.allclose(s.project_perp(a) + pa, a, atol=TOL)


@pytest.mark.parametrize("group,support", CASES)
def test_pi_e_lands_in_e(group, support):
    """Π_E A is fixed by every g and vanishes outside ω (so it lies in E = H_G ∩ L)."""
    s = space(group, support)
    g = Group.from_name(group)
    pa = s.project_e(torch.randn(5, 2, 9, dtype=torch.float64)).view(5, 2, 3, 3)
    for i in range(g.order):
        assert torch.allclose(g.act(pa, i), pa, atol=TOL)
    assert torch.all(pa.view(5, 2, 9)[..., ~s.omega] == 0)


@pytest.mark.parametrize("group", GROUP_NAMES)
def test_pi_h_is_the_group_average(group):
    g = Group.from_name(group)
    s = space(group)
    k = torch.randn(3, 3, dtype=torch.float64)
    average = g.orbit(k).mean(0)
    assert torch.allclose(s.project_h(k.reshape(9)).view(3, 3), average, atol=TOL)


@pytest.mark.parametrize("group,support", CASES)
def test_pi_l_and_pi_h_commute_iff_support_is_invariant(group, support):
    s = space(group, support)
    a = torch.randn(6, 9, dtype=torch.float64)
    commute = torch.allclose(s.project_l(s.project_h(a)), s.project_h(s.project_l(a)), atol=TOL)
    invariant = all(
        torch.equal(Group.from_name(group).act(s.omega.view(3, 3), i), s.omega.view(3, 3))
        for i in range(Group.from_name(group).order)
    )
    assert commute == invariant == s.compatible
    # In general Π_E = ω_G ⊙ Π_H; in the compatible case also Π_L Π_H (SPEC §2).
    assert torch.allclose(s.project_e(a), s.project_h(a) * s.omega_g, atol=TOL)
    if invariant:
        assert torch.allclose(s.project_e(a), s.project_l(s.project_h(a)), atol=TOL)


def test_skewed_support_is_not_invariant_under_any_group():
    for group in GROUP_NAMES:
        assert not space(group, "skewed").compatible


@pytest.mark.parametrize(
    "group,k,dim", [("c4", 3, 3), ("d4", 3, 3), ("c2", 3, 5), ("c4", 5, 7), ("d4", 5, 6), ("c4", 7, 13)]
)
def test_dim_e_matches_spec_oracles(group, k, dim):
    s = space(group, "full", k)
    assert s.orbits_in_e == dim
    # ... and equals the rank of the projection matrix.
    assert torch.linalg.matrix_rank(s.p_e).item() == dim


def test_dim_e_of_cross_and_skewed_under_c4():
    # cross: centre + the 4 edge midpoints = 2 orbits; skewed's ω_G is the cross.
    assert space("c4", "cross").orbits_in_e == 2
    assert space("c4", "skewed").orbits_in_e == 2
    assert space("c4", "skewed").omega.sum() == 6


def test_basis_of_e_is_orthonormal():
    s = space("d4", "full", 5)
    u = s.basis_e
    assert torch.allclose(u.T @ u, torch.eye(u.shape[1], dtype=torch.float64), atol=TOL)


@pytest.mark.parametrize(
    "spec,match",
    [
        ([[1, 0], [0, 1]], "3x3"),
        ([[1, 0, 2], [0, 1, 0], [0, 0, 1]], "only 0 and 1"),
        ([[0, 0, 0], [0, 0, 0], [0, 0, 0]], "empty"),
        ("diamond", "full, cross, skewed"),
    ],
)
def test_bad_supports_are_refused_with_the_key(spec, match):
    with pytest.raises(ValueError, match=rf"model.support=.*{match}"):
        make_support(spec, 3)


def test_explicit_support_mask():
    mask = make_support([[0, 1, 0], [1, 1, 1], [0, 1, 0]], 3)
    assert torch.equal(mask, make_support("cross", 3))


@pytest.mark.parametrize("group", GROUP_NAMES)
def test_projections_are_exact_in_float64(group):
    """P_E is built from orbit indicators: entries 1/|orbit| are exact, so P_E² = P_E bit for bit."""
    s = LayerSpace(Group.from_name(group), 5, 5, dtype=torch.float64)
    assert torch.equal(s.p_e @ s.p_e, s.p_e)
    assert torch.equal(s.p_perp @ s.p_perp, s.p_perp)


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_weights_on_e_have_distance_exactly_zero_in_float32(name):
    """An equivariant model's A = θ·B is constant on orbits, so exactly in E: Π_{E⊥}A is computed in
    float64 (exact for float32 inputs), and d(A) is 0 to the bit, not float32 round-off (SPEC §2)."""
    from eqtrain.nets.cnn import build_model
    from eqtrain.schema import ModelConfig

    model = build_model(ModelConfig(), Group.from_name(name), (1, 28, 28), 10, constrain=True, n_seeds=3)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.maps:
            m.theta.copy_(torch.randn(m.theta.shape, generator=generator))
    assert model.distances().values.abs().max().item() == 0.0
    nominal = build_model(ModelConfig(), Group.from_name(name), (1, 28, 28), 10, constrain=False, n_seeds=3)
    nominal.set_weights([a.detach() * (1 + 1e-3 * torch.rand(a.shape, generator=generator)) for a in model.weights()])
    assert nominal.distances().total.min().item() > 1e-6  # off E by a hair: measured, not hidden
