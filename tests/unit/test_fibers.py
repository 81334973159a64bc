"""Regular fibers (SPEC §9): the group law read off the action, the joint action on weights, dim E,
the projections, and the exact equivariance of a G-CNN."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from eqtrain.geometry.fields import FieldType
from eqtrain.geometry.group import GROUP_NAMES, Group
from eqtrain.geometry.layer_space import LayerSpace
from eqtrain.geometry.parametrization import ParametrizedMap, make_basis
from eqtrain.geometry.support import make_support
from eqtrain.nets.cnn import ACTIVATIONS, build_model
from eqtrain.nets.init import initial_weights

from ..helpers import make_config

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-12  # float64 round-off on at most a few thousand entries
KINDS = {  # (out, in) field types of the three kinds of G-CNN layer
    "lifting": ("regular", "trivial"),
    "group conv": ("regular", "regular"),
    "head": ("trivial", "regular"),
}


def layer_space(group: str, pair: str, k: int = 3, support="full", fields=(2, 3)) -> LayerSpace:
    g = Group.from_name(group)
    out_kind, in_kind = KINDS[pair]
    mask = make_support(support, k) if support is not None else None
    out_type, in_type = FieldType(g, out_kind, fields[0]), FieldType(g, in_kind, fields[1])
    return LayerSpace(g, k, k, mask, torch.float64, out_type, in_type)


def joint_permutations(space: LayerSpace) -> torch.Tensor:
    """(|G|, out·in·s): (g·K)[o, i, p] = K[σ_out(o), σ_in(i), g⁻¹p] as a gather on the flat kernel,
    built by acting on an index kernel: channels by the field types, pixels by the group."""
    o, i = space.out_type.channels, space.in_type.channels
    index = torch.arange(o * i * space.size).view(o, i, space.h, space.w)
    out_perm, in_perm = space.out_type.permutations(), space.in_type.permutations()
    return torch.stack(
        [space.group.act(index[out_perm[g]][:, in_perm[g]], g).reshape(-1) for g in range(space.group.order)]
    )


def orbit_count(space: LayerSpace) -> int:
    """Orbits of the joint action inside ω_G, by union-find over the index triples."""
    perms = joint_permutations(space)
    parent = list(range(perms.shape[1]))

    def find(j: int) -> int:
        while parent[j] != j:
            parent[j] = parent[parent[j]]
            j = parent[j]
        return j

    for row in perms.tolist():
        for j, k in enumerate(row):
            parent[find(j)] = find(k)
    inside = space.omega_g.repeat(space.out_type.channels * space.in_type.channels).tolist()
    return len({find(j) for j in range(perms.shape[1]) if inside[j]})


# -- the group law, read off the action -------------------------------------------------------------


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_multiplication_table_is_the_composition_of_actions(name):
    """(ab)·x = a·(b·x) for every pair, identity first, inverses exact: the law comes from the action."""
    group = Group.from_name(name)
    table, inv = group.table(), group.inverses()
    x = torch.randn(2, 5, 5)
    for a, b in itertools.product(range(group.order), repeat=2):
        assert torch.equal(group.act(group.act(x, b), a), group.act(x, int(table[a, b])))
    assert torch.equal(table[0], torch.arange(group.order))
    assert torch.equal(table[torch.arange(group.order), inv], torch.zeros(group.order, dtype=torch.long))


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_regular_field_action_is_a_group_action(name):
    """(g·f)(h, p) = f(g⁻¹h, g⁻¹p) (SPEC §9): acting by b then a is acting by ab."""
    group = Group.from_name(name)
    fields = FieldType(group, "regular", 2)
    f = torch.randn(3, fields.channels, 4, 4)
    for a, b in itertools.product(range(group.order), repeat=2):
        ab = int(group.table()[a, b])
        assert torch.equal(fields.act(fields.act(f, b), a), fields.act(f, ab))
    assert FieldType(group, "trivial", 5).permutations().eq(torch.arange(5)).all()


def test_field_type_names_the_valid_kinds():
    with pytest.raises(ValueError, match="'induced'.*trivial, regular"):
        FieldType(Group.from_name("c4"), "induced", 1)


# -- dim E = the orbits of the joint action ------------------------------------------------------------


@pytest.mark.parametrize(
    "group,pair,k,support", list(itertools.product(GROUP_NAMES, KINDS, (3, 5), ("full", "cross", "skewed")))
)
def test_dim_e_is_the_orbit_count_of_the_joint_action(group, pair, k, support):
    """SPEC §9: dim E = the number of orbits of triples (o, i, p) with p ∈ ω_G, for every group,
    kernel size, support and field pair. G acts freely on a regular index, so it is also
    |triples in ω_G| / |G|."""
    space = layer_space(group, pair, k, support)
    out_dim, in_dim = space.out_type.channels, space.in_type.channels
    dim = space.dim_e(out_dim, in_dim)
    assert dim == orbit_count(space)
    assert dim == out_dim * in_dim * int(space.omega_g.sum()) // space.group.order
    assert len(space.orbit_sizes) == dim and bool((space.orbit_sizes == space.group.order).all())


@pytest.mark.parametrize(
    "pair,grid,support,per_fields",
    [
        ("group conv", 3, "full", 36),  # a p4 group convolution: 4·4·9/4 per pair of fields
        ("lifting", 3, "full", 9),  # 4·9/4 per field
        ("group conv", 3, "cross", 20),  # 4·4·5/4
        ("group conv", 5, "full", 100),
        ("head", 7, None, 49),  # h·w per field and class
        ("head", 4, None, 16),
    ],
)
def test_dim_e_matches_spec_oracles_under_c4(pair, grid, support, per_fields):
    fields = (2, 3)
    space = layer_space("c4", pair, grid, support, fields)
    assert space.dim_e(space.out_type.channels, space.in_type.channels) == per_fields * fields[0] * fields[1]


def test_trivial_fields_keep_the_scalar_path():
    """Trivial → trivial is SPEC §2's count, computed by the s×s matrices as before."""
    g = Group.from_name("c4")
    space = LayerSpace(g, 3, 3, None, torch.float64, FieldType(g, "trivial", 4), FieldType(g, "trivial", 2))
    assert not space.joint and space.dim_e(4, 2) == 4 * 2 * 3


# -- the projections ---------------------------------------------------------------------------------------

CASES = list(itertools.product(GROUP_NAMES, KINDS, ("full", "skewed")))


def random_weight(space: LayerSpace, *lead: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (*lead, space.out_type.channels, space.in_type.channels, space.size)
    return torch.randn(shape, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("group,pair,support", CASES)
def test_pi_e_is_an_orthogonal_projection_onto_e_inside_l(group, pair, support):
    """Π_E symmetric and idempotent; Π_E + Π_E⊥ = I; on L, Π_E + (Π_L − Π_E) = Π_L with both parts
    orthogonal projections; Π_E A is fixed by every g and vanishes off ω."""
    space = layer_space(group, pair, 3, support if pair != "head" else None)
    a, b = random_weight(space, 2, seed=1), random_weight(space, 2, seed=2)
    pa = space.project_e(a)
    assert torch.allclose(space.project_e(pa), pa, atol=TOL)
    assert abs((pa * b).sum() - (a * space.project_e(b)).sum()) < TOL
    assert torch.allclose(space.project_perp(a) + pa, a, atol=TOL)
    la = space.project_l(a)
    rest = la - space.project_e(la)  # Π_{E⊥} on L
    assert torch.allclose(space.project_l(rest), rest, atol=TOL) and abs((rest * pa).sum()) < 1e-10
    assert torch.allclose(space.project_e(la), pa, atol=TOL)  # E ⊂ L: Π_E Π_L = Π_E
    perms = joint_permutations(space)
    for g in range(space.group.order):
        assert torch.equal(pa.flatten(-3)[..., perms[g]], pa.flatten(-3))
    assert torch.all(pa[..., ~space.omega] == 0)
    # Π_H is the group average of the jointly permuted weight (SPEC §9).
    average = torch.stack([a.flatten(-3)[..., p] for p in perms]).mean(0).view(a.shape)
    assert torch.allclose(space.project_h(a), average, atol=TOL)


@pytest.mark.parametrize(
    "group,pair,fields", [("c4", "group conv", (1, 2)), ("d4", "group conv", (1, 1)), ("c2", "lifting", (2, 3)),
                          ("flip", "head", (3, 2)), ("c4", "head", (2, 1))]
)  # fmt: skip
def test_pi_e_matches_a_dense_null_space(group, pair, fields):
    """Π_E equals the orthogonal projector onto the null space of the stacked constraints
    (g·K − K = 0 for every g, K = 0 off ω), computed densely."""
    space = layer_space(group, pair, 3, "skewed" if pair != "head" else None, fields)
    m = space.out_type.channels * space.in_type.channels * space.size
    eye = torch.eye(m, dtype=torch.float64)
    constraints = [eye[p] - eye for p in joint_permutations(space)]  # row j: (g·K − K)[j] = K[p[j]] − K[j]
    off = ~space.omega.repeat(space.out_type.channels * space.in_type.channels)
    constraints.append(eye[off])
    stacked = torch.cat(constraints)
    values, vectors = torch.linalg.eigh(stacked.T @ stacked)  # (the Gram matrix: same null space, faster)
    null = vectors[:, values < 1e-9].T  # orthonormal basis of E
    dense = null.T @ null
    ours = space.project_e(eye.view(m, space.out_type.channels, space.in_type.channels, space.size)).view(m, m)
    assert null.shape[0] == space.dim_e(space.out_type.channels, space.in_type.channels)
    assert torch.allclose(ours, dense, atol=1e-10)


@pytest.mark.parametrize("pair", KINDS)
def test_orbit_basis_is_an_orthonormal_basis_of_e(pair):
    """The equivariant parametrization: A = θ[orbit]/√|orbit| (a gather) and its transpose (a
    scatter-add) — B has orthonormal columns and B Bᵀ = Π_E."""
    space = layer_space("d4", pair, 3, "cross" if pair != "head" else None)
    basis = make_basis(space, "orthogonal", True, torch.Generator())
    m = ParametrizedMap(1, space.out_type.channels, space.in_type.channels, space.size, basis, torch.float64)
    n = space.dim_e(*m.channels)
    assert m.theta.shape == (1, n)

    def weight_of(theta: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            m.theta.copy_(theta.reshape(m.theta.shape))
            return m.weight()[0]

    columns = torch.stack([weight_of(row) for row in torch.eye(n, dtype=torch.float64)]).flatten(1)
    assert torch.allclose(columns @ columns.T, torch.eye(n, dtype=torch.float64), atol=TOL)
    a = random_weight(space, 1)
    assert torch.allclose(weight_of(m.pull_back(a)), space.project_e(a)[0], atol=TOL)
    m.set_weight(a)  # the least-squares fit onto E is Π_E A
    assert torch.allclose(m.weight().detach(), space.project_e(a), atol=TOL)


# -- the G-CNN: exact equivariance --------------------------------------------------------------------


def gcnn(group: str, constrain: bool, dtype=torch.float64, *overrides: str, size: int = 12, sigma: float = 0.0):
    cfg = make_config("model=gcnn", "model.channels=[2,3]", *overrides)
    model = build_model(cfg.model, Group.from_name(group), (1, size, size), 10, constrain, dtype)
    model.set_weights(initial_weights(model, "perturbed_equivariant", sigma, seed=3))
    return model


def hidden_maps(model, x):
    """The feature map after each conv block (conv, pool, activation, LayerNorm), as the forward computes it."""
    arch, maps, h, k = model.arch, [], x, model.arch.kernel_size
    for a, pool in zip(model.weights()[:-1], arch.pool):
        h = F.conv2d(h, a[0].reshape(a.shape[1], a.shape[2], k, k), padding=k // 2)
        h = ACTIVATIONS[arch.activation](F.avg_pool2d(h, pool))
        h = F.layer_norm(h, h.shape[-2:])
        maps.append(h)
    return maps


@pytest.mark.parametrize("group", GROUP_NAMES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_equivariant_gcnn_is_exactly_equivariant(group, dtype, tol):
    """SPEC §9: in E, every hidden map transforms by the regular action — pixels moved and fibre
    channels permuted — and the logits are invariant, for every g (≤1e-5 / ≤1e-12 relative)."""
    model = gcnn(group, True, dtype)
    g = model.group
    types = model.arch.field_types(g)[1:-1]
    x = torch.rand(6, 1, 12, 12, dtype=dtype)
    with torch.no_grad():
        base, maps = model(x), hidden_maps(model, x)
        for i in range(g.order):
            moved = hidden_maps(model, g.act(x, i))
            for fields, f, fg in zip(types, maps, moved):
                assert ((fg - fields.act(f, i)).norm() / f.norm()).item() <= tol
            assert ((model(g.act(x, i)) - base).norm() / base.norm()).item() <= tol
        for i in range(1, g.order):  # ... and not by moving pixels alone: the fibres really are permuted
            moved = hidden_maps(model, g.act(x, i))
            for f, fg in zip(maps, moved):
                assert ((fg - g.act(f, i)).norm() / f.norm()).item() > 1e-2


@pytest.mark.parametrize("group", GROUP_NAMES)
def test_gcnn_off_e_is_clearly_not_invariant(group):
    """The check has teeth: weights moved off E (σ = 1e-2, in L) break invariance by far more than round-off."""
    model = gcnn(group, False, torch.float64, sigma=1e-2)
    g = model.group
    x = torch.rand(6, 1, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        base = model(x)
        worst = max(((model(g.act(x, i)) - base).norm() / base.norm()).item() for i in range(1, g.order))
    assert worst > 1e-2


def test_gcnn_preset_counts_fields_and_matches_the_paper_cnn_width():
    """model.channels counts fields: the preset's [4, 4] regular C4-fields are 16 channels per layer,
    the paper CNN's width and L, with dim E = 36 (lifting) + 16·36 + 10·4·49 (SPEC §9 oracles)."""
    c4 = Group.from_name("c4")
    g = build_model(make_config("model=gcnn").model, c4, (1, 28, 28), 10, True)
    p = build_model(make_config("model=paper_cnn").model, c4, (1, 28, 28), 10, True)
    assert [m.channels for m in g.maps] == [m.channels for m in p.maps] == [(16, 1), (16, 16), (10, 16)]
    assert g.dim_e() == 4 * 9 + 4 * 4 * 36 + 10 * 4 * 49 == sum(t.numel() for t in g.parameters())
    d4 = build_model(make_config("model=gcnn").model, Group.from_name("d4"), (1, 28, 28), 10, False)
    assert [m.channels for m in d4.maps] == [(32, 1), (32, 32), (10, 32)]


@pytest.mark.parametrize("fibers", ["[regular,trivial]", "[trivial,regular]"])
def test_mixed_fibers_are_exactly_invariant(fibers):
    """A per-layer list: regular → trivial and trivial → regular convolutions go through the same mechanism."""
    model = gcnn("c4", True, torch.float64, f"model.fibers={fibers}")
    x = torch.rand(4, 1, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        base = model(x)
        for i in range(4):
            assert ((model(model.group.act(x, i)) - base).norm() / base.norm()).item() <= 1e-12


def test_per_field_bias_keeps_the_gcnn_invariant():
    """A regular field's bias is one number shared by its |G| channels: invariant, not part of A."""
    model = gcnn("d4", True, torch.float64, "model.bias=true")
    assert [tuple(b.shape) for b in model.biases] == [(1, 2), (1, 3), (1, 10)]
    with torch.no_grad():
        for b in model.biases:
            b.normal_()
        x = torch.rand(4, 1, 12, 12, dtype=torch.float64)
        base = model(x)
        for i in range(8):
            assert ((model(model.group.act(x, i)) - base).norm() / base.norm()).item() <= 1e-12


def test_basis_parametrization_of_a_gcnn_spans_l():
    """Both parametrizations work: L does not depend on the fibers, so a random basis of L round-trips."""
    model = gcnn("c4", False, torch.float64, "model.parametrization=basis", "model.support=cross")
    a0 = initial_weights(model, "standard", 0.0, seed=1)
    model.set_weights(a0)
    for a, w in zip(a0, model.weights()):
        assert torch.allclose(w[0], a, atol=1e-10)
    assert model.maps[0].basis.shape == (5, 9)


def test_perturbed_init_of_a_gcnn_is_one_value_per_joint_orbit_plus_a_perturbation_off_e():
    """nets.init: Kaiming-uniform orbit values (bound 1/√(in channels·k²)) tied along the joint
    orbits, plus Π_E⊥Π_L ξ of size ≈ σ·√(dim L − dim E)."""
    model = gcnn("c4", False, torch.float64, "model.support=cross", size=28)
    on_e = initial_weights(model, "perturbed_equivariant", 0.0, seed=0)
    sigma = 1e-3
    a0 = initial_weights(model, "perturbed_equivariant", sigma, seed=0)
    perp_sq = codim = 0
    for space, m, a, e in zip(model.space, model.maps, a0, on_e):
        assert torch.allclose(space.project_e(e), e, atol=TOL)  # constant on every joint orbit
        assert e.abs().max() <= 1 / (m.channels[1] * space.size) ** 0.5
        assert len(e[space.omega.expand_as(e)].unique()) == space.dim_e(*m.channels)  # one value per orbit
        assert torch.all(a[..., ~space.omega] == 0)
        perp_sq += space.project_perp(a).pow(2).sum().item()
        codim += space.dim_l(*m.channels) - space.dim_e(*m.channels)
        assert torch.allclose(space.project_e(a), e, atol=TOL)  # the perturbation is orthogonal to E
    assert abs(perp_sq**0.5 / (sigma * codim**0.5) - 1) < 0.05


def test_regular_fibers_escape_the_single_orbit_head_trap():
    """SPEC §1's trap (a 2×2 map under C4 after LayerNorm makes every scalar equivariant model
    constant) is refused for trivial fibers, but a regular field on 2×2 keeps 3 invariant
    functionals per field: the G-CNN is allowed and not constant. A 1×1 map stays refused."""
    c4 = Group.from_name("c4")
    with pytest.raises(ValueError, match="single c4-orbit"):
        build_model(make_config("model=paper_cnn").model, c4, (1, 8, 8), 10, True)
    model = build_model(make_config("model=gcnn").model, c4, (1, 8, 8), 10, True, torch.float64)
    model.set_weights(initial_weights(model, "perturbed_equivariant", 0.0, seed=0))
    with torch.no_grad():
        logits = model(torch.rand(5, 1, 8, 8, dtype=torch.float64))[0]
    assert (logits - logits.mean(0)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="single c4-orbit"):
        build_model(make_config("model=gcnn").model, c4, (1, 4, 4), 10, True)


@pytest.mark.parametrize("value,match", [("bogus", "model.fibers='bogus'"), (["regular"], "model.fibers=.*list of 2")])
def test_bad_fibers_name_the_key(value, match):
    cfg = make_config("model=gcnn").model
    cfg.fibers = value
    with pytest.raises(ValueError, match=match):
        build_model(cfg, Group.from_name("c4"), (1, 28, 28), 10, False)


def test_network_space_does_mixed_layers_together_exactly_as_layer_by_layer():
    """NetworkSpace.project_perp does all layers in one scatter-add and one gather: the same Π_E⊥ as
    each LayerSpace's, for an ensemble of seeds and mixed fibers."""
    model = gcnn("d4", False, torch.float64, "model.fibers=[regular,trivial]")
    weights = [torch.randn(3, *a.shape[1:], dtype=torch.float64) for a in model.weights()]
    together = model.space.project_perp(weights)
    for space, a, b in zip(model.space, weights, together):
        assert torch.allclose(space.project_perp(a), b, atol=TOL)
    assert [space.joint for space in model.space] == [True, True, False]
