"""P4CNN and Z2CNN (SPEC §11; Cohen & Welling 2016): their sizes, exact equivariance of every layer on E
with max pooling and the per-field batch norm, the per-layer equivariance error e_l, seed independence,
the refusals, and one run through the real loop."""

import pytest
import torch
import torch.nn.functional as F

from eqtrain.geometry.fields import FieldType
from eqtrain.geometry.group import GROUP_NAMES, Group
from eqtrain.nets.cnn import block_outputs, build_model, logits_at
from eqtrain.nets.conv import _conv_by_patches as conv_by_patches
from eqtrain.nets.conv import pooled_filter
from eqtrain.nets.init import initial_weights, initial_weights_of_seeds
from eqtrain.nets.layers import normalize
from eqtrain.training.layer_equivariance import layer_errors

from ..helpers import make_config

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-12  # float64 round-off on maps of a few thousand entries (SPEC §11: "e_l = 0 up to round-off")
C4 = Group.from_name("c4")


def model_of(preset="p4cnn", *overrides, group=C4, constrain=True, dtype=torch.float64, size=28, seeds=1, sigma=0.0):
    cfg = make_config(f"model={preset}", *overrides).model
    model = build_model(cfg, group, (1, size, size), 10, constrain, dtype, seeds)
    model.set_weights(initial_weights_of_seeds(model, "perturbed_equivariant", sigma, list(range(seeds))))
    return model


def images(n=3, size=28, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- sizes ----------------------------------------------------------------------------------------------


def test_p4cnn_has_cohen_and_wellings_shapes_and_the_documented_sizes():
    """28 → 26 → 24 (max pool: 12) → 10 → 8 → 6 → 4 with valid 3x3 convs; dim E from SPEC §9's oracles:
    lifting 9 per field, group conv 36 per pair of fields, head h·w = 16 per field and class."""
    model = model_of()
    assert [conv for conv, _ in model.arch.blocks()] == [(26, 26), (24, 24), (10, 10), (8, 8), (6, 6), (4, 4)]
    assert model.arch.grids() == [(26, 26), (12, 12), (10, 10), (8, 8), (6, 6), (4, 4)]
    assert [m.channels for m in model.maps] == [(40, 1)] + [(40, 40)] * 5 + [(10, 40)]
    dim_e = 10 * 9 + 5 * 10 * 10 * 36 + 10 * 10 * 16
    assert model.dim_e() == model.n_params() == dim_e == 19690  # configs/model/p4cnn.yaml
    in_l = model_of(constrain=False)
    assert in_l.n_params() == 40 * 9 + 5 * 40 * 40 * 9 + 10 * 40 * 16 == 78760
    pooled = model_of("p4cnn", "model.group_pool=true")  # max over each field's 4 channels, mean over 4x4
    assert pooled.maps[-1].channels == (10, 10) and pooled.dim_e() == dim_e - 1600 + 100


def test_z2cnn_is_the_same_stack_with_plain_channels_and_cw_filter_count():
    """Z2CNN: 20 trivial channels per layer; in L exactly the 21 380 filter weights of C&W's Z2CNN."""
    model = model_of("z2cnn", constrain=False)
    assert [m.channels for m in model.maps] == [(20, 1)] + [(20, 20)] * 5 + [(10, 20)]
    assert model.n_params() == 20 * 9 + 5 * 20 * 20 * 9 + 10 * 20 * 16 == 21380
    # E under C4: 3 orbits of a 3x3 kernel per channel pair (SPEC §2), 4 orbits of the 4x4 map per field and class
    assert model.dim_e() == 20 * 3 + 5 * 400 * 3 + 10 * 20 * 4 == 6860


@pytest.mark.parametrize("group", GROUP_NAMES)
@pytest.mark.parametrize("preset", ["p4cnn", "z2cnn"])
def test_every_mode_and_group_builds(preset, group):
    """In E (mode=equivariant) and in L (every other mode), under every group."""
    g, cfg = Group.from_name(group), make_config(f"model={preset}").model
    in_e, in_l = (build_model(cfg, g, (1, 28, 28), 10, constrain) for constrain in (True, False))
    assert in_e.n_params() == in_e.dim_e() == in_l.dim_e()
    assert in_l.n_params() == sum(space.dim_l(*m.channels) for space, m in zip(in_l.space, in_l.maps))


# -- exact equivariance on E, layer by layer ------------------------------------------------------------


def reference_errors(model, x, rho_pixels_only=False):
    """e_l straight from SPEC §11's definition: every image at once, every g (the identity too)."""
    g, n = model.group, model.n_seeds
    types = model.arch.field_types(g)[1:-1]
    weights, errors = model.weights(), torch.zeros(len(types), n, dtype=torch.float64)
    with torch.no_grad():
        base = [f.unflatten(1, (n, -1)) for f in block_outputs(model.arch, weights, x)]
        for i in range(g.order):
            moved = [f.unflatten(1, (n, -1)) for f in block_outputs(model.arch, weights, g.act(x, i))]
            for layer, (fields, f, fg) in enumerate(zip(types, base, moved)):
                expected = g.act(f, i) if rho_pixels_only else fields.act(f, i)
                errors[layer] += ((fg - expected).flatten(2).norm(dim=-1) / f.flatten(2).norm(dim=-1)).sum(0)
    return errors / (len(x) * g.order)


CASES = {
    "p4cnn": ("p4cnn",),  # max pooling, per-field batch norm, ReLU, valid convs
    "group_pool": ("p4cnn", "model.group_pool=true"),
    "layernorm-same": ("p4cnn", "model.norm=layernorm", "model.padding=same", "model.channels=[3,3,3,3,3,3]"),
    "z2cnn": ("z2cnn",),
}


@pytest.mark.parametrize("case", CASES)
def test_on_e_every_layer_is_equivariant_and_the_logits_invariant(case):
    """SPEC §11: in E (float64) every e_l ≤ 1e-12 and the logits are invariant (≤1e-12 relative) — with max
    pooling and the batch norm whose statistics each field shares; chunked, and by the definition."""
    model, x = model_of(*CASES[case]), images()
    chunked = torch.stack(list(layer_errors(model, x, model.group, chunk=2).values()))  # chunks of 2 and 1
    assert chunked.max() <= TOL
    assert reference_errors(model, x).max() <= TOL
    with torch.no_grad():
        base = model(x)
        for i in range(model.group.order):
            assert ((model(model.group.act(x, i)) - base).norm() / base.norm()).item() <= TOL
    if model.arch.fibers[0] == "regular":  # the fibres really are permuted: pixels alone do not do it
        assert reference_errors(model, x, rho_pixels_only=True)[0].item() > 1e-2


def test_d4_p4cnn_is_exact_too():
    model, x = model_of("p4cnn", "model.channels=[2,2,2,2,2,2]", group=Group.from_name("d4")), images(2)
    assert torch.stack(list(layer_errors(model, x, model.group, chunk=8).values())).max() <= TOL


def test_off_e_the_layer_errors_show_the_broken_symmetry():
    """Weights moved off E inside L (σ = 1e-2): e_l far above round-off from the first layer on. Without a
    batch norm (no coupling between images) the chunked e_l equals the definition's to round-off."""
    model, x = model_of(constrain=False, sigma=1e-2), images()
    errors = layer_errors(model, x, model.group, chunk=2)
    assert list(errors) == [f"equiv/layer/conv{i}" for i in range(1, 7)]
    assert torch.stack(list(errors.values())).min() > 1e-3
    per_image = model_of("p4cnn", "model.norm=layernorm", constrain=False, sigma=1e-2)
    chunked = torch.stack(list(layer_errors(per_image, x, per_image.group, chunk=2).values()))
    assert chunked.min() > 1e-3
    assert torch.allclose(chunked, reference_errors(per_image, x), rtol=1e-10, atol=0)


# -- the batch norm -------------------------------------------------------------------------------------


def test_field_batch_norm_commutes_with_g_image_by_image_and_a_per_channel_one_does_not():
    """SPEC §11. A batch norm is a map of the batch; G acts on each image by its own g. With one mean and
    variance per regular field, turning one image of the batch turns its normalized map and leaves the
    others alone (≤1e-12). Per channel, the same holds only when the whole batch turns by one g: turning
    one image permutes its channels' contributions to the statistics of the others (teeth)."""
    for group in (C4, Group.from_name("d4")):
        fields = FieldType(group, "regular", 3)
        gen = torch.Generator().manual_seed(0)
        scale = torch.rand(fields.channels, 1, 1, generator=gen, dtype=torch.float64) * 3
        x = torch.randn(5, fields.channels, 6, 6, generator=gen, dtype=torch.float64) * scale + scale
        for norm, exact in (("batchnorm", True), ("batchnorm_channel", False)):
            y = normalize(x, norm, group.order)
            whole, one = [], []
            for i in range(1, group.order):
                whole.append((normalize(fields.act(x, i), norm, group.order) - fields.act(y, i)).norm() / y.norm())
                turned = torch.cat([fields.act(x[:1], i), x[1:]])  # image 0 turned, the others not
                expected = torch.cat([fields.act(y[:1], i), y[1:]])
                one.append((normalize(turned, norm, group.order) - expected).norm() / y.norm())
            assert max(whole) <= TOL  # both commute with one g for the whole batch
            assert max(one) <= TOL if exact else min(one) > 1e-2


def test_a_per_channel_batch_norm_breaks_the_layer_errors_on_e():
    """The same teeth through the network: weights in E, per-channel statistics → e_l well above round-off
    (each image of a chunk is turned by its own g), per-field ones → round-off."""
    x = images(4)
    channel = model_of("p4cnn", "model.norm=batchnorm_channel", constrain=False)  # refused in E: built in L, on E
    assert channel.distances().total.max() == 0
    assert torch.stack(list(layer_errors(channel, x, C4, chunk=4).values())).min() > 1e-3
    assert torch.stack(list(layer_errors(model_of(), x, C4, chunk=4).values())).max() <= TOL


def test_field_batch_norm_keeps_each_seed_and_field_to_itself():
    """Statistics per seed and per field, over batch, channels of the field and pixels: normalizing two
    seeds' stacked maps equals normalizing each alone, and each field has mean 0 and variance 1."""
    gen = torch.Generator().manual_seed(1)
    a, b = (torch.randn(4, 8, 5, 5, generator=gen, dtype=torch.float64) * s + s for s in (1.0, 5.0))
    both = normalize(torch.cat([a, b], 1), "batchnorm", 4)
    assert torch.allclose(both, torch.cat([normalize(a, "batchnorm", 4), normalize(b, "batchnorm", 4)], 1), atol=TOL)
    per_field = both.view(4, 4, 4, 5, 5).transpose(0, 1).flatten(1)
    assert per_field.mean(1).abs().max() <= TOL and (per_field.var(1, unbiased=False) - 1).abs().max() <= 1e-4


def test_seeds_are_independent_networks():
    """A 2-seed p4cnn's seed 0 is the 1-seed p4cnn at seed 0's weights (≤1e-12, float64): the batch norm
    never mixes seeds — shared input, and one batch per seed."""
    two, one = model_of(seeds=2, constrain=False, sigma=1e-2), model_of(constrain=False, sigma=1e-2)
    one.set_weights([a[:1] for a in two.weights()])
    x, other = images(4), images(4, seed=1)
    with torch.no_grad():
        assert ((two(x)[0] - one(x)[0]).norm() / one(x).norm()).item() <= TOL
        per_seed = two(torch.stack([x, other]))
        assert ((per_seed[0] - one(x)[0]).norm() / one(x).norm()).item() <= TOL
        assert ((per_seed[1] - two(other)[1]).norm() / two(other)[1].norm()).item() <= TOL


# -- refusals and bit-for-bit defaults ------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,size,match",
    [
        (("model.norm=batchnorm_channel",), 28, r"model.norm='batchnorm_channel' normalizes each channel of conv1, "),
        ((), 29, r"conv2 pooling 2 on a 25x25 map drops border pixels"),  # max pooling, odd size
    ],
)
def test_equivariant_mode_refuses_what_breaks_exactness_in_one_line(overrides, size, match, caplog):
    cfg = make_config("model=p4cnn", *overrides).model
    with pytest.raises(
        ValueError, match=f"mode=equivariant needs an exactly equivariant network, but .*{match}"
    ) as err:
        build_model(cfg, C4, (1, size, size), 10, constrain=True)
    assert "\n" not in str(err.value)
    build_model(cfg, C4, (1, size, size), 10, constrain=False)  # the modes in L: allowed, with a warning
    assert "not exactly G-equivariant even on E" in caplog.text


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("norm", "groupnorm", "model.norm='groupnorm' is not valid; use one of layernorm, batchnorm, batchnorm_c"),
        ("padding", "full", "model.padding='full' is not valid; use one of same, valid"),
        ("pool_kind", "min", "model.pool_kind='min' is not valid; use one of avg, max"),
    ],
)
def test_bad_values_name_the_key_the_value_and_the_valid_ones(key, value, match):
    cfg = make_config("model=p4cnn").model
    setattr(cfg, key, value)
    with pytest.raises(ValueError, match=match):
        build_model(cfg, C4, (1, 28, 28), 10, constrain=False)


def test_group_pool_after_layernorm_on_scalar_fields_is_refused():
    """The pooled features would be per-channel means that LayerNorm sets to 0: every model constant (SPEC §1)."""
    cfg = make_config("model=z2cnn", "model.norm=layernorm", "model.group_pool=true").model
    with pytest.raises(ValueError, match="model.group_pool=true after LayerNorm .* trivial fields"):
        build_model(cfg, C4, (1, 28, 28), 10, constrain=False)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_the_paper_cnn_forward_pass_is_the_one_written_out(shared, training):
    """Default options: conv (zero padding 1) → average pool → tanh → LayerNorm, twice, then the head
    (float32, 2 seeds, with biases; one input shown to both seeds, or one per seed). A conv and its
    average pooling are one conv of the pooled filter at stride 2 (``conv.conv_pool``), with or without a
    gradient, and LayerNorm over (H, W) is a group norm of one channel per group (``layers.layer_norm``).
    Equal to conv then avg_pool2d then layer_norm to float32 round-off (measured ≤ 1.7e-6 relative over both
    inputs, σ 1e-2 and 1e-1, 3 seeds, 1 and 2 threads; bound 1e-5), and bit for bit the written-out ops,
    in training and in the evaluation."""
    model = model_of("paper_cnn", "model.bias=true", constrain=False, dtype=torch.float32, seeds=2, sigma=1e-2)
    with torch.no_grad():
        for b in model.biases:
            b.normal_()
    x, weights, biases = images(5).float(), model.weights(), list(model.biases)
    x = x if shared else torch.stack([x, x.flip(-1)])  # (N, B, 1, H, W): each seed its own images
    w1, w2 = weights[0].reshape(32, 1, 3, 3), weights[1].reshape(32, 16, 3, 3)
    b1, b2, head = biases[0].reshape(-1), biases[1].reshape(-1), weights[2].detach()

    def forward(first_conv, second_conv, norm):
        h = norm(torch.tanh(first_conv), (14, 14))
        h = norm(torch.tanh(second_conv(h)), (7, 7))
        return torch.bmm(h.reshape(5, 2, -1).transpose(0, 1), head.flatten(2).transpose(1, 2)) + biases[2][:, None]

    with torch.no_grad():
        first = x if shared else x.transpose(0, 1).reshape(5, 2, 28, 28)
        # the pooled filter at stride 2: oneDNN's conv on the shared input, patches and a matmul per seed
        fused1 = (
            F.conv2d(first, pooled_filter(w1, 2), b1, 2, 1)
            if shared
            else conv_by_patches(first, pooled_filter(w1, 2), b1, 2, 1, 2)
        )
        plain1 = F.avg_pool2d(F.conv2d(first, w1, b1, 1, 1, groups=1 if shared else 2), 2)

        def plain2(h):
            return F.avg_pool2d(F.conv2d(h, w2, b2, 1, 1, groups=2), 2)

        def fused2(h):
            return F.conv2d(h, pooled_filter(w2, 2), b2, 2, 1, groups=2)

        expected = forward(plain1, plain2, F.layer_norm)  # conv then pool, then LayerNorm, as written before P4CNN
        ours = forward(fused1, fused2, lambda h, hw: F.group_norm(h, h.shape[1]))  # LayerNorm as a group norm
    with torch.set_grad_enabled(training):
        out = logits_at(model.arch, model.weights(), x, biases)
        assert out.requires_grad == training
        assert torch.equal(out.detach(), ours)
        assert (out.detach() - expected).abs().max() <= 1e-5 * expected.abs().max()
        assert torch.equal(model(x).detach(), out.detach())


def test_initial_weights_of_a_p4cnn_lie_in_e():
    """nets.init on the new layers: A₀ ∈ E exactly at σ = 0 (Π_E A₀ = A₀)."""
    model = model_of(constrain=False)
    for space, a in zip(model.space, initial_weights(model, "perturbed_equivariant", 0.0, seed=0)):
        assert torch.allclose(space.project_e(a), a, atol=TOL)


# -- through the real loop ------------------------------------------------------------------------------


def test_a_p4cnn_trains_and_logs_every_layers_equivariance_error(run_train):
    run = run_train(
        "dataset.train_limit=40", "dataset.test_limit=20", "epochs=1", "model=p4cnn", "mode=augreg", "max_steps=3"
    )
    metrics = run.metrics()
    assert metrics["status"] == "completed" and metrics["dim_E"] == 19690
    steps, values = run.scalars("equiv/layer/conv1")
    assert steps == [0, 3] and all(v > 0 for v in values)  # before training and at the end; off E in augreg
    assert {f"equiv/layer/conv{i}" for i in range(1, 7)} <= set(metrics)
