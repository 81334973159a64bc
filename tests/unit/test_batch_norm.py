"""Batch norm as the field trains it (SPEC §12): running statistics per seed and field, updated in training as
torch's BatchNorm does and used in evaluation, an optional learnable affine per field, and what follows for
equivariance — evaluated with running statistics an image's prediction depends on that image alone, so on E
the logits are invariant image by image. ``model.bn_stats=batch`` stays the earlier path bit for bit."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from eqtrain.data.datasets import Data
from eqtrain.geometry.group import Group
from eqtrain.nets import cnn
from eqtrain.nets.cnn import block_outputs, build_model, logits_at
from eqtrain.nets.layers import BN_EPS, NormBlock, normalize
from eqtrain.schema import ModelConfig
from eqtrain.training.metrics import evaluate

from ..helpers import make_config

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-12  # float64 round-off on maps of a few hundred entries
INVARIANT = 1e-10  # float64 round-off of a network's logits, relative (SPEC §11: "0 up to round-off")
C4 = Group.from_name("c4")
MOMENTUM = 0.3
# A small P4CNN (SPEC §11): a lifting conv, then group convs between regular fields, ReLU, max pooling,
# valid convs; 12x12 images: conv1 10x10, conv2 8x8 (pooled 4x4), conv3 2x2, then the invariant head.
P4 = dict(fibers="regular", channels=[2, 2, 2], padding="valid", pool=[1, 2, 1], pool_kind="max", activation="relu")


def model_of(constrain=False, seeds=1, stats="running", affine=False, norm="batchnorm", seed=0, **arch):
    cfg = ModelConfig(**{**P4, **arch}, norm=norm, bn_stats=stats, bn_momentum=MOMENTUM, bn_affine=affine)
    model = build_model(cfg, C4, (1, 12, 12), 10, constrain, torch.float64, seeds)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.set_weights([torch.randn(a.shape, generator=gen, dtype=a.dtype) for a in model.weights()])
    return model


def images(*shape, seed=1):
    """Images of 12x12 pixels, uniform in [0, 1): shape (B,) shared by every seed, or (N, B) one batch per seed."""
    return torch.rand(*shape, 1, 12, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def trained(model, passes=3):
    """The model after ``passes`` training forward passes on per-seed batches: running statistics off (0, 1)."""
    with torch.no_grad():
        for i in range(passes):
            model.logits(images(model.n_seeds, 6, seed=10 + i), train=True)
    return model


def randomize_affine(model, seed=2):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # the scales and shifts are views of ``flat``: writing them writes the parameters
        for p in [*model.norm_scale, *model.norm_shift]:
            p.copy_(torch.rand(p.shape, generator=gen, dtype=p.dtype) * 2 - 0.5)


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


# -- the running statistics are torch's ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("norm", "torch_norm"), [("batchnorm", torch.nn.BatchNorm3d), ("batchnorm_channel", torch.nn.BatchNorm2d)]
)
def test_running_statistics_and_affine_are_torchs_batch_norm_seed_by_seed(norm, torch_norm):
    """Per seed, the block is torch's BatchNorm with momentum m and affine on the field view (B, F, |G|, H, W)
    (per channel: on (B, C, H, W)): the same training outputs, running mean and (unbiased) running variance
    after every pass, and the same evaluation outputs from them (float64, ≤1e-12)."""
    n, fields, size, b = 2, 3, 4, 5
    groups = fields if norm == "batchnorm" else fields * size  # statistics per seed
    gen = torch.Generator().manual_seed(0)
    stats = torch.cat([torch.zeros(n, groups), torch.ones(n, groups)], 1).double()  # as EqCNN.norm_stats
    scale, shift = (torch.rand(n, groups, generator=gen, dtype=torch.float64) + 0.5 for _ in range(2))
    block = NormBlock(stats[:, :groups], stats[:, groups:], scale, shift)
    theirs = [torch_norm(groups, eps=BN_EPS, momentum=MOMENTUM, dtype=torch.float64) for _ in range(n)]
    with torch.no_grad():
        for k, bn in enumerate(theirs):
            bn.weight.copy_(scale[k])
            bn.bias.copy_(shift[k])

    def torchs(x, k):
        seed = x[:, k * fields * size : (k + 1) * fields * size]
        view = seed.reshape(b, fields, size, 6, 6) if norm == "batchnorm" else seed
        return theirs[k](view).reshape(seed.shape)

    channel_scale = torch.rand(n * fields * size, 1, 1, generator=gen, dtype=torch.float64) * 3
    with torch.no_grad():
        for _ in range(3):
            x = torch.randn(b, n * fields * size, 6, 6, generator=gen, dtype=torch.float64) * channel_scale + 1
            ours = normalize(x, norm, size, block, train=True, momentum=MOMENTUM)
            for k, bn in enumerate(theirs):
                assert (ours[:, k * fields * size : (k + 1) * fields * size] - torchs(x, k)).abs().max() <= TOL
                assert (stats[k, :groups] - bn.running_mean).abs().max() <= TOL
                assert (stats[k, groups:] - bn.running_var).abs().max() <= TOL
        assert (stats[:, groups:] - 1).abs().min() > 1e-2  # the variances moved: the comparison has teeth
        ours = normalize(x, norm, size, block, train=False)
        for k, bn in enumerate(theirs):
            bn.eval()
            assert (ours[:, k * fields * size : (k + 1) * fields * size] - torchs(x, k)).abs().max() <= TOL


def test_a_training_pass_updates_every_blocks_statistics_in_the_models_buffer():
    """EqCNN.norm_stats (N, S) holds block l's means, then its variances, per seed; one training pass from
    (0, 1) moves conv1's to (1 − m)·(0, 1) + m·(the field's batch mean, unbiased variance) of conv1's
    output before the norm (≤1e-12); an evaluation pass, or a training pass told not to, changes nothing."""
    model = model_of(seeds=2)
    fields = model.arch.channels[0]
    assert model.norm_stats.shape == (2, 2 * sum(model.arch.channels))
    x = images(2, 6)
    with torch.no_grad():
        raw = next(block_outputs(dataclasses.replace(model.arch, norm="none"), model.weights(), x))
        per_field = raw.unflatten(1, (2 * fields, -1)).transpose(0, 1).flatten(1)  # (N·F, B·|G|·H·W)
        model.logits(x, train=True)
        mean = MOMENTUM * per_field.mean(1)
        var = (1 - MOMENTUM) + MOMENTUM * per_field.var(1, unbiased=True)
        assert (model.norm_stats[:, :fields].flatten() - mean).abs().max() <= TOL
        assert (model.norm_stats[:, fields : 2 * fields].flatten() - var).abs().max() <= TOL
        after = model.norm_stats.clone()
        model.logits(images(2, 6, seed=3))
        model.logits(images(2, 6, seed=3), train=True, update_stats=False)
        assert torch.equal(model.norm_stats, after)
        model.logits(images(2, 6, seed=3), train=True)
        assert not torch.equal(model.norm_stats, after)


def test_an_ensembles_running_statistics_are_each_seeds_trained_alone():
    """Statistics per seed, never across seeds: after three training passes on per-seed batches, seed k of a
    2-seed model holds what a 1-seed model at seed k's weights holds after the same passes on its batches,
    and evaluates alike (float64, ≤1e-12)."""
    two = model_of(seeds=2, affine=True)
    randomize_affine(two)
    trained(two)
    for k in range(2):
        one = model_of(seeds=1, affine=True)
        with torch.no_grad():
            one.flat.copy_(two.flat[k : k + 1])
        with torch.no_grad():
            for i in range(3):
                one.logits(images(2, 6, seed=10 + i)[k : k + 1], train=True)
            assert (one.norm_stats[0] - two.norm_stats[k]).abs().max() <= TOL
            x = images(5)
            assert relative(one.logits(x)[0], two.logits(x)[k]) <= TOL


# -- evaluation: each image on its own, and invariant on E --------------------------------------------------


def test_with_running_statistics_an_images_evaluated_logits_depend_on_that_image_alone():
    """Evaluated with running statistics, the logits of a chunk of images are each image's alone (≤1e-12
    relative); with batch statistics, the same weights give logits that depend on the chunk (teeth)."""
    running = trained(model_of(seeds=2))
    batch = model_of(seeds=2, stats="batch")
    with torch.no_grad():
        batch.flat.copy_(running.flat)
        x = images(6)
        for model, alone in ((running, True), (batch, False)):
            together = model.logits(x)
            one_by_one = torch.cat([model.logits(x[i : i + 1]) for i in range(len(x))], 1)
            assert relative(one_by_one, together) <= TOL if alone else relative(one_by_one, together) > 1e-2


@pytest.mark.parametrize("affine", [False, True], ids=["no affine", "affine"])
def test_on_e_the_evaluated_logits_are_invariant_image_by_image(affine):
    """SPEC §11-§12: one running mean and variance per regular field (and one scale and shift) are the same
    for the |G| channels g permutes, so on E (float64) f(g_j·x_j) = f(x_j) with each image turned by its own
    g_j (≤1e-10 relative) — after training passes moved the statistics and with a random affine. Per channel
    (batchnorm_channel, built in L and set on E) the running statistics break it (teeth)."""
    turns = torch.tensor([1, 2, 3, 0, 2])
    x = images(len(turns))
    turned = torch.cat([C4.act(x[j : j + 1], int(g)) for j, g in enumerate(turns)])
    for norm, exact in (("batchnorm", True), ("batchnorm_channel", False)):
        model = model_of(norm=norm, seeds=2, affine=affine)
        with torch.no_grad():
            model.set_weights(model.space.project_e(model.weights()))
        assert model.distances().total.max() <= TOL
        trained(model)
        if affine:
            randomize_affine(model)
        with torch.no_grad():
            error = relative(model.logits(turned), model.logits(x))
        assert error <= INVARIANT if exact else error > 1e-3, norm


def tiny_data() -> Data:
    gen = torch.Generator().manual_seed(4)
    labels = lambda n: torch.randint(0, 10, (n,), generator=gen)  # noqa: E731
    return Data(images(9, seed=5), labels(9), images(11, seed=6), labels(11), 10)


@pytest.mark.parametrize("on_e", [False, True], ids=["off E", "on E"])
def test_evaluate_with_running_statistics_is_chunk_free_and_equivariant_on_e(on_e):
    """evaluate() with running statistics (and an affine): chunks sized by memory alone give the same
    figures one image at a time as all at once — counts exactly, means ≤1e-12 relative (off E, where they
    are far from 0) — equal to the logits of each image alone; on E, equiv/test_error and every
    equiv/layer/<conv> are round-off (each image turned as a whole chunk is, each independent), and the
    projected model Π_E(A) = A, with the model's statistics and affine, keeps the model's accuracy."""
    model = model_of(constrain=on_e, seeds=2, affine=True)
    trained(model)
    randomize_affine(model)
    data = tiny_data()
    one, all_at_once = evaluate(model, data, C4, budget=1), evaluate(model, data, C4, budget=1 << 30)
    equiv = [key for key in one[0] if key.startswith("equiv/") and key != "equiv/test_consistency"]
    assert len(equiv) == 4  # equiv/test_error and e_l of the three conv blocks
    for a, b in zip(one, all_at_once, strict=True):
        for key in a:
            if key not in equiv:
                assert a[key] == b[key], key
            elif on_e:
                assert a[key] <= INVARIANT and b[key] <= INVARIANT, key
            else:
                assert abs(a[key] - b[key]) <= TOL * b[key] and b[key] > 1e-3, key
        if on_e:
            assert (a["acc/test_projected"], a["acc/test_orbit_projected"]) == (a["acc/test"], a["acc/test_orbit"])
    with torch.no_grad():  # the figures are those of the running statistics: each image on its own
        alone = torch.cat([model.logits(data.x_test[i : i + 1]) for i in range(len(data.y_test))], 1)
    assert [row["acc/test"] for row in one] == (alone.argmax(-1) == data.y_test).double().mean(1).tolist()


# -- the affine is learnable, outside A ---------------------------------------------------------------------


def test_the_affine_is_learnable_numbers_in_flat_after_the_biases_and_outside_a():
    """Scale and shift per seed and field are views of EqCNN.flat after θ and the biases, get gradients in
    training, count in n_params, and leave A, E's dimension and the pulled-back regularizer alone."""
    plain = model_of(constrain=True, bias=True)
    model = model_of(constrain=True, bias=True, affine=True)
    fields = sum(model.arch.channels)
    assert model.n_params() == plain.n_params() + 2 * fields and model.dim_e() == plain.dim_e()
    assert model.flat.shape[1] == plain.flat.shape[1] + 2 * fields
    assert all(a is b for a, b in zip(model.parameter_list()[-6:], [*model.norm_scale, *model.norm_shift]))
    assert all(torch.equal(s, torch.ones_like(s)) for s in model.norm_scale)
    assert all(torch.equal(s, torch.zeros_like(s)) for s in model.norm_shift)
    with torch.no_grad():
        model.flat[:, -2 * fields :] = 3.0  # written through flat: the parameters are its views
    assert all(torch.equal(p, torch.full_like(p, 3.0)) for p in [*model.norm_scale, *model.norm_shift])
    x = images(1, 6) - 0.5  # centred: no ReLU of conv1 is dead on every image, so every scale matters
    model.logits(x, train=True).square().sum().backward()
    grad = model.flat_grad()
    assert grad[:, -2 * fields :].abs().min() > 0  # every scale and shift gets a gradient
    p_theta = sum(m.theta[0].numel() for m in model.maps)
    assert model.flat.shape[1] == p_theta + sum(b.shape[1] for b in model.biases) + 2 * fields
    pulled = model.pull_back(torch.ones(1, sum(model.space.sizes), dtype=torch.float64))
    assert pulled.shape[1] == p_theta  # the regularizer's gradient covers θ alone: it adds to flat[:, :P_θ]


# -- batch statistics: the earlier path, bit for bit --------------------------------------------------------


def earlier_normalize(x, norm, field_size):
    """``layers.normalize`` as it was before running statistics (batch statistics, no affine)."""
    if norm == "layernorm":
        return F.group_norm(x, x.shape[1], eps=1e-5)
    if norm in ("batchnorm", "batchnorm_channel"):
        size = field_size if norm == "batchnorm" else 1
        b, c, h, w = x.shape
        grouped = x.reshape(b, c // size, size, h, w)
        return F.batch_norm(grouped, None, None, training=True, eps=1e-5).view(b, c, h, w)
    return x


@pytest.mark.parametrize("norm", ["batchnorm", "batchnorm_channel"])
def test_batch_statistics_are_the_earlier_forward_pass_bit_for_bit(norm, monkeypatch):
    """bn_stats=batch without affine (the default): no state (norm_state None, no statistics), and the logits
    in training and in evaluation, by the model and by logits_at, equal bit for bit the forward pass with the
    earlier normalize (float32, as runs train)."""
    cfg = ModelConfig(**P4, norm=norm)
    model = build_model(cfg, C4, (1, 12, 12), 10, False, torch.float32, 2)
    with torch.no_grad():
        model.flat.normal_(generator=torch.Generator().manual_seed(0))
    x = images(2, 6).float()
    assert model.norm_state() is None and model.norm_stats.shape == (2, 0)
    with torch.no_grad():
        now = [model.logits(x, train=True), model.logits(x), logits_at(model.arch, model.weights(), x)]
        monkeypatch.setattr(cnn, "normalize", earlier_normalize)
        before = logits_at(model.arch, model.weights(), x)
    assert all(torch.equal(logits, before) for logits in now)


# -- state: checkpoints, moves, phases, refusals ------------------------------------------------------------


def test_a_checkpoint_holds_the_running_statistics_and_a_model_without_them_has_the_earlier_keys():
    """The running statistics are in the state dict: a fresh model loading it evaluates as the saved one;
    moved to float32 a model still updates its own buffer. Without running statistics or affine, the state
    dict holds exactly the parameters it held before SPEC §12 (θ, biases), so older files load."""
    model = trained(model_of(seeds=2, affine=True))
    randomize_affine(model)
    state = model.state_dict()
    assert set(state) == {f"maps.{i}.theta" for i in range(4)} | {"norm_stats"} | {
        f"norm_{kind}.{i}" for kind in ("scale", "shift") for i in range(3)
    }
    fresh = model_of(seeds=2, affine=True, seed=7)
    fresh.load_state_dict(state)
    x = images(5)
    with torch.no_grad():
        assert torch.equal(fresh.norm_stats, model.norm_stats) and torch.equal(fresh.logits(x), model.logits(x))
        moved = fresh.float()
        before = moved.norm_stats.clone()
        moved.logits(images(2, 6, seed=8).float(), train=True)
    assert moved.norm_stats.dtype == torch.float32 and not torch.equal(moved.norm_stats, before)
    assert set(model_of(stats="batch", bias=True).state_dict()) == {f"maps.{i}.theta" for i in range(4)} | {
        f"biases.{i}" for i in range(4)
    }
    for norm in ("layernorm", "none"):
        assert set(model_of(stats="batch", norm=norm).state_dict()) == {f"maps.{i}.theta" for i in range(4)}


def test_a_phase_switch_keeps_the_running_statistics_and_the_affine():
    """A phase's new model (start.build_for_phase, here onto E) holds Π_E(A) and, as they were, the running
    statistics, the biases and the affine: numbers outside A."""
    from eqtrain.cli.train import settings_of
    from eqtrain.training.start import build_for_phase

    overrides = [f"model.{key}={value}".replace(" ", "") for key, value in P4.items()]
    bn = ("model.norm=batchnorm", "model.bn_stats=running", "model.bn_affine=true", "model.bias=true")
    settings = settings_of(make_config(*overrides, *bn, "mode=equivariant", "dtype=float64", "device=cpu"))
    data = tiny_data()
    start = build_model(settings.config.model, C4, data.image_shape, 10, False, torch.float64)
    with torch.no_grad():
        start.flat.normal_(generator=torch.Generator().manual_seed(0))
    trained(start)
    model = build_for_phase(settings, settings.phases[0], C4, data, start)
    assert model.constrain and torch.equal(model.norm_stats, start.norm_stats)
    assert all(torch.equal(a, b) for a, b in zip(model.invariant_parameters(), start.invariant_parameters()))
    assert all(torch.allclose(a, b, atol=TOL) for a, b in zip(model.weights(), start.space.project_e(start.weights())))


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("bn_stats", "population", r"model\.bn_stats='population' is not valid; use one of batch, running"),
        ("bn_momentum", 0.0, r"model\.bn_momentum=0\.0 is not valid; use a number in \(0, 1\]"),
        ("bn_momentum", 1.5, r"model\.bn_momentum=1\.5 is not valid"),
        ("bn_momentum", float("nan"), r"model\.bn_momentum=nan is not valid"),
        ("bn_affine", "yes", r"model\.bn_affine='yes' is not valid; use true or false"),
    ],
)
def test_bad_batch_norm_keys_are_refused_in_one_line_naming_the_key(key, value, match):
    cfg = ModelConfig(**P4, norm="batchnorm", **{key: value})
    with pytest.raises(ValueError, match=match) as err:
        build_model(cfg, C4, (1, 12, 12), 10, False)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("norm", ["layernorm", "none"])
def test_an_affine_without_a_batch_norm_is_refused_and_running_statistics_change_nothing(norm, caplog):
    """An affine belongs to a batch norm: asked for with another norm, the model is refused, naming both keys.
    ``bn_stats=running`` only says which statistics a batch norm uses (a recipe sets it for any model): without
    one the model keeps none, and the run's validation says so in the log."""
    with pytest.raises(ValueError, match=rf"model\.bn_affine=true needs a batch norm, but model\.norm='{norm}'"):
        build_model(ModelConfig(**P4, norm=norm, bn_affine=True), C4, (1, 12, 12), 10, False)
    model = build_model(ModelConfig(**P4, norm=norm, bn_stats="running"), C4, (1, 12, 12), 10, False)
    assert model.norm_stats.shape == (1, 0) and model.norm_state() is None
    from eqtrain.cli.train import settings_of

    from ..helpers import make_config

    settings_of(make_config(f"model.norm={norm}", "model.bn_stats=running"))
    assert f"model.bn_stats=running changes nothing here: model.norm={norm}" in caplog.text
