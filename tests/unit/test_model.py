"""Model building: exact equivariance, parametrizations, refusals (SPEC §1, §3)."""

import pytest
import torch
from omegaconf import OmegaConf

from eqtrain.geometry.group import GROUP_NAMES, Group
from eqtrain.nets.cnn import build_model
from eqtrain.nets.init import initial_weights
from eqtrain.schema import ModelConfig

from ..helpers import make_config

REL_TOL = 1e-5  # float32 round-off, SPEC-style relative tolerance for invariance


def model_cfg(preset: str = "paper_cnn", *overrides: str):
    return make_config(f"model={preset}", *overrides).model


def random_start(model, seed=0):
    model.set_weights(initial_weights(model, "standard", 0.0, seed))
    return model


@pytest.mark.parametrize("preset", ["paper_cnn", "deep_cnn"])
@pytest.mark.parametrize("group", GROUP_NAMES)
def test_equivariant_model_is_exactly_invariant(preset, group):
    """SPEC §1: a model in E gives the same logits on every g·x (≤1e-5 relative)."""
    g = Group.from_name(group)
    model = random_start(build_model(model_cfg(preset), g, (1, 28, 28), 10, constrain=True))
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        base = model(x)
        for i in range(g.order):
            err = (model(g.act(x, i)) - base).norm() / base.norm()
            assert err < REL_TOL, (group, i, err.item())


def test_unconstrained_model_is_not_invariant():
    """The check above can fail: a generic model in L is far from invariant."""
    g = Group.from_name("c4")
    model = random_start(build_model(model_cfg(), g, (1, 28, 28), 10, constrain=False))
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        assert (model(g.act(x, 1)) - model(x)).norm() / model(x).norm() > 1e-2


def test_equivariant_parameter_count_is_dim_e():
    model = build_model(model_cfg(), Group.from_name("c4"), (1, 28, 28), 10, constrain=True)
    # conv1 16·1·3 + conv2 16·16·3 + head 10·16·13 (SPEC §2 oracles)
    expected = 16 * 1 * 3 + 16 * 16 * 3 + 10 * 16 * 13
    assert sum(p.numel() for p in model.parameters()) == model.dim_e() == expected


def test_basis_parametrization_spans_l_with_a_non_orthogonal_basis():
    cfg = model_cfg("paper_cnn", "model.support=cross", "model.parametrization=basis")
    model = build_model(cfg, Group.from_name("c4"), (1, 28, 28), 10, constrain=False)
    conv = model.maps[0]
    assert conv.basis.shape == (5, 9)  # |ω| = 5 coordinates for a cross
    gram = conv.basis @ conv.basis.T
    assert (gram - torch.diag(torch.diagonal(gram))).abs().max() > 1e-2  # not orthogonal
    assert torch.linalg.matrix_rank(conv.basis).item() == 5
    # Round trip: weights in L are represented exactly.
    a0 = initial_weights(model, "standard", 0.0, seed=3)
    model.set_weights(a0)
    for a, w in zip(a0, model.weights()):
        assert torch.allclose(w.double(), a, atol=1e-6)


def test_basis_parametrization_is_seeded():
    cfg = model_cfg("paper_cnn", "model.parametrization=basis")
    g = Group.from_name("c4")
    b1 = build_model(cfg, g, (1, 28, 28), 10, False).maps[0].basis
    b2 = build_model(cfg, g, (1, 28, 28), 10, False).maps[0].basis
    assert torch.equal(b1, b2)


def test_degenerate_single_orbit_head_is_refused_in_every_mode():
    """SPEC §1: the paper CNN on 8x8 digits reads a 2x2 map after LayerNorm: E is constant."""
    for constrain in (True, False):
        with pytest.raises(ValueError, match="single c4-orbit.*constant"):
            build_model(model_cfg(), Group.from_name("c4"), (1, 8, 8), 10, constrain)


def test_two_orbit_head_warns(caplog):
    # 28 -> 14 -> 7 -> 3 on a 3x3 grid: C4 orbits are centre, edges, corners (3); 4x4 has 3 too.
    # A 2x2 map under C2 has 2 orbits: allowed, with a warning.
    build_model(model_cfg(), Group.from_name("c2"), (1, 8, 8), 10, False)
    assert "only 2 c2-orbits" in caplog.text


@pytest.mark.parametrize(
    "overrides,shape,match",
    [
        (["model.pool=2"], (1, 30, 30), "pooling 2 on a 15x15 map"),
        (["model.stride=[2,1]"], (1, 28, 28), "stride 2 on a 28x28 map"),
    ],
)
def test_equivariant_mode_refuses_inexact_architectures(overrides, shape, match, caplog):
    cfg = model_cfg("paper_cnn", *overrides)
    with pytest.raises(ValueError, match=f"mode=equivariant.*{match}"):
        build_model(cfg, Group.from_name("c4"), shape, 10, constrain=True)
    caplog.clear()
    build_model(cfg, Group.from_name("c4"), shape, 10, constrain=False)  # allowed, with a warning
    assert "not exactly G-equivariant even on E" in caplog.text and match in caplog.text


def test_centred_stride_is_exact():
    """Stride 2 on a 31x31 map samples a centred grid (31 -> 16 -> 8 -> 4): still exactly equivariant."""
    cfg = model_cfg("paper_cnn", "model.stride=[2,1]", "model.pool=[2,2]")
    g = Group.from_name("c4")
    model = random_start(build_model(cfg, g, (1, 31, 31), 10, constrain=True))
    x = torch.rand(4, 1, 31, 31)
    with torch.no_grad():
        assert (model(g.act(x, 1)) - model(x)).norm() / model(x).norm() < REL_TOL


def test_rotation_groups_refuse_non_square_images():
    with pytest.raises(ValueError, match="square images"):
        build_model(model_cfg(), Group.from_name("c4"), (1, 28, 32), 10, False)
    build_model(model_cfg(), Group.from_name("flip"), (1, 28, 32), 10, True)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("kernel_size", 4, "model.kernel_size=4 must be a positive odd"),
        ("kernel_size", 0, "model.kernel_size=0"),
        ("channels", [], "model.channels"),
        ("activation", "swish", "model.activation='swish'"),
        ("pool", [2], "model.pool=.*one per conv"),
        ("parametrization", "polar", "model.parametrization='polar'"),
    ],
)
def test_bad_model_values_name_the_key(key, value, match):
    cfg = OmegaConf.structured(ModelConfig)
    cfg[key] = value
    with pytest.raises(ValueError, match=match):
        build_model(cfg, Group.from_name("c4"), (1, 28, 28), 10, False)


def test_bias_is_invariant_and_not_part_of_a():
    cfg = model_cfg("paper_cnn", "model.bias=true")
    g = Group.from_name("c4")
    model = random_start(build_model(cfg, g, (1, 28, 28), 10, constrain=True))
    with torch.no_grad():
        for b in model.biases:
            b.normal_()
        x = torch.rand(4, 1, 28, 28)
        assert (model(g.act(x, 1)) - model(x)).norm() / model(x).norm() < REL_TOL
    assert len(model.weights()) == 3


def test_maps_pooled_to_nothing_are_refused():
    cfg = model_cfg("paper_cnn", "model.layernorm=false")
    with pytest.raises(ValueError, match="leaves a 0x0 map from 3x3 images.*dataset.image_size"):
        build_model(cfg, Group.from_name("c4"), (1, 3, 3), 10, False)
