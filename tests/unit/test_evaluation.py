"""The evaluation (SPEC §7, §10) in chunks: the same figures whatever the chunk, bounded memory, the same
pooling bit for bit, and one input read once by every seed's first convolution."""

import pytest
import torch
import torch.nn.functional as F

from eqtrain.data.datasets import Data
from eqtrain.geometry.group import Group
from eqtrain.nets.cnn import avg_pool, build_model, logits_at
from eqtrain.schema import ModelConfig
from eqtrain.training.metrics import eval_chunk, evaluate

from ..helpers import TINY


def ensemble(seeds: int, dtype=torch.float32, **model):
    torch.manual_seed(0)
    m = build_model(ModelConfig(**model), Group.from_name("c4"), (1, 28, 28), 10, False, dtype, n_seeds=seeds)
    with torch.no_grad():
        m.flat.normal_(0, 0.3)
    return m


def tiny_data(dtype=torch.float32) -> Data:
    g = torch.Generator().manual_seed(1)
    x = lambda n: torch.rand(n, 1, 28, 28, generator=g, dtype=dtype)  # noqa: E731
    y = lambda n: torch.randint(0, 10, (n,), generator=g)  # noqa: E731
    return Data(x(37), y(37), x(23), y(23), 10)


def reference(model, data: Data, group: Group) -> dict[str, torch.Tensor]:
    """SPEC §7's figures straight from their definitions: every image at once, no chunks."""
    with torch.no_grad():
        orbit = torch.stack([model(group.act(data.x_test, g)) for g in range(group.order)])
        pred = orbit.argmax(-1)
        err = (orbit - orbit[0]).norm(dim=-1) / orbit[0].norm(dim=-1)
        return {
            "acc/train": (model(data.x_train).argmax(-1) == data.y_train).double().mean(1),
            "acc/test": (pred[0] == data.y_test).double().mean(1),
            "acc/test_orbit": (pred == data.y_test).double().mean((0, 2)),
            "equiv/test_error": err.double().mean((0, 2)),
            "equiv/test_consistency": (pred == pred[0]).all(0).double().mean(1),
        }


@pytest.mark.parametrize("budget", [1, 200_000, 1 << 30], ids=["one image", "a few images", "all at once"])
def test_every_figure_is_the_same_whatever_the_chunk(budget):
    """Accuracies are counts: exactly equal. The error is a mean of float32 ratios, summed in float64
    per chunk instead of in float32 at once: equal to float32 round-off (≤1e-6 relative)."""
    model, data, group = ensemble(3), tiny_data(), Group.from_name("c4")
    expected = reference(model, data, group)
    got = evaluate(model, data, group, budget=budget)
    for key, values in expected.items():
        ours = torch.tensor([row[key] for row in got], dtype=torch.float64)
        if key == "equiv/test_error":
            assert torch.allclose(ours, values, rtol=1e-6, atol=0), key
        else:
            assert torch.equal(ours, values), key
    assert min(row["equiv/test_error"] for row in got) > 1e-2  # off E: the comparison has teeth


def test_the_projected_model_is_evaluated_at_its_own_weights():
    """acc/test_projected is the accuracy of Π_E(A) (SPEC §10): a 1-seed model set to Π_E(A) gives it."""
    model, data, group = ensemble(2), tiny_data(), Group.from_name("c4")
    got = evaluate(model, data, group)
    snapped = ensemble(2)
    snapped.set_weights(model.space.project_e(model.weights()))
    expected = reference(snapped, data, group)
    assert [row["acc/test_projected"] for row in got] == expected["acc/test"].tolist()
    assert [row["acc/test_orbit_projected"] for row in got] == expected["acc/test_orbit"].tolist()


def projected_orbit(**arch):
    """evaluate's acc/test_orbit_projected, and the reference figures of a model set to Π_E(A) (full orbits)."""
    model, data, group = ensemble(2, **arch), tiny_data(), Group.from_name("c4")
    got = [row["acc/test_orbit_projected"] for row in evaluate(model, data, group)]
    snapped = ensemble(2, **arch)
    with torch.no_grad():
        snapped.flat.copy_(model.flat)  # the biases, the affine ...
        snapped.norm_stats.copy_(model.norm_stats)
    snapped.set_weights(model.space.project_e(model.weights()))
    return got, reference(snapped, data, group), snapped.arch


def test_an_exact_projected_model_is_classified_on_its_orbit_as_on_the_images():
    """Where the architecture is exact, Π_E(A) is invariant and its orbit is not computed again: the orbit's
    accuracy is still what the full orbit gives (regular fields, running-statistics batch norm, an affine)."""
    arch = dict(
        fibers="regular", channels=[2, 2], norm="batchnorm", bn_stats="running", bn_affine=True, layernorm=False
    )
    got, expected, model_arch = projected_orbit(**arch)
    assert model_arch.equivariance_breakers() == [] and model_arch.norm_breakers() == []
    assert got == expected["acc/test_orbit"].tolist()


def test_an_inexact_projected_model_has_its_orbit_computed():
    """An off-centre grid (stride 2 on 28 + 2 − 3 = 27 pixels): Π_E(A) is not invariant, its orbit is computed."""
    got, expected, model_arch = projected_orbit(stride=[2, 1])
    assert model_arch.equivariance_breakers()
    assert got == expected["acc/test_orbit"].tolist()
    assert (expected["acc/test_orbit"] != expected["acc/test"]).any()  # the shortcut would have been wrong


def test_train_accuracy_on_a_fixed_subset():
    model, data, group = ensemble(2), tiny_data(), Group.from_name("c4")
    got = evaluate(model, data, group, train_images=11)
    head = Data(data.x_train[:11], data.y_train[:11], data.x_test, data.y_test, 10)
    assert [row["acc/train"] for row in got] == reference(model, head, group)["acc/train"].tolist()


def test_a_chunk_holds_the_widest_activation_of_all_seeds_within_the_budget():
    model = ensemble(30)
    widest = 16 * 14 * 14  # conv1's output (its pooling taken into the filter: conv.conv_pool), per image and seed
    assert model.widest_activation() == widest
    assert eval_chunk(model, budget=8 << 20) == (8 << 20) // (30 * widest * 4)
    assert eval_chunk(model, budget=1) == 1  # at least one image


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("shape", [(3, 5, 28, 28), (2, 4, 15, 15), (2, 3, 9, 13)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_average_pooling_equals_torchs_bit_for_bit(p, shape, dtype):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    with torch.no_grad():
        assert torch.equal(avg_pool(x, p), F.avg_pool2d(x, p))
        before = x.clone()
        avg_pool(x, p).add_(1)  # the result is a new tensor: writing into it leaves x alone
        assert torch.equal(x, before)


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("shape", [(3, 5, 28, 28), (2, 4, 15, 15), (2, 3, 9, 13)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_average_pooling_with_autograd_equals_torchs_bit_for_bit(monkeypatch, p, shape, dtype):
    """Training pools large maps with ``_AvgPool`` (forward: strided views; backward: g/p² spread over the
    window, 0 on dropped rows and columns): the same numbers as avg_pool2d, both ways, and its second
    derivative (eqtrain-analyze's Hessian) to round-off."""
    from eqtrain.nets import layers

    monkeypatch.setattr(layers, "POOL_VIEWS_FROM", 0)  # these small maps through _AvgPool too
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype, requires_grad=True)
    ours, torchs = avg_pool(x, p), F.avg_pool2d(x, p)
    assert ours.grad_fn is not None and "AvgPool2D" not in type(ours.grad_fn).__name__  # really ours
    g = torch.randn(torchs.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    assert torch.equal(ours, torchs)
    assert torch.equal(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(torchs, x, g)[0])

    def hessian_vector(pool):
        (grad,) = torch.autograd.grad(pool(x, p).tanh().sum(), x, create_graph=True)
        return torch.autograd.grad(grad.square().sum(), x)[0]

    tol = 1e-12 if dtype == torch.float64 else 1e-5  # float32: measured <= 2.6e-7 of the largest entry here
    assert torch.allclose(hessian_vector(avg_pool), hessian_vector(F.avg_pool2d), rtol=tol, atol=tol)


def test_one_input_shown_to_every_seed_equals_each_seed_given_its_own_copy():
    """The first convolution reads a shared input once, with every seed's filters (float64: ≤1e-12)."""
    model = ensemble(4, torch.float64)
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        shared = logits_at(model.arch, model.weights(), x)
        apart = logits_at(model.arch, model.weights(), x.expand(4, *x.shape))
    assert (shared - apart).abs().max().item() <= 1e-12 * apart.abs().max().item()


def test_eval_every_evaluates_every_k_epochs_and_at_the_end(run_train):
    """eval_every=2 over 3 epochs of 10 steps: step 0, epoch 2, and the final step 30."""
    run = run_train(*TINY, "epochs=3", "eval_every=2", "eval_train_images=20")
    steps, _ = run.scalars("acc/test")
    assert steps == [0, 20, 30]
    assert run.scalars("acc/train")[0] == [0, 20, 30]


@pytest.mark.parametrize("model", [{}, {"fibers": "regular", "channels": [4, 4]}], ids=["paper CNN", "G-CNN"])
def test_the_layer_errors_from_the_orbits_passes_equal_their_definition(model):
    """evaluate() takes e_l (SPEC §11) from the forward passes of the test orbit it already makes; the
    same as ``layer_errors``, which turns the images anew (float64: ≤1e-12 relative)."""
    from eqtrain.training.layer_equivariance import layer_errors

    net, data, group = ensemble(2, torch.float64, **model), tiny_data(torch.float64), Group.from_name("c4")
    got = evaluate(net, data, group, budget=300_000)
    expected = layer_errors(net, data.x_test, group, chunk=7)
    for tag, values in expected.items():
        ours = torch.tensor([row[tag] for row in got], dtype=torch.float64)
        assert torch.allclose(ours, values, rtol=1e-12, atol=0), tag
        assert values.min() > 1e-3  # off E: the comparison has teeth


def test_channels_are_permuted_only_where_a_layer_has_regular_fields():
    """ρ_l(g) on channels (SPEC §9): none on trivial fields (no gather is made), the regular permutation of
    each field's |G| channels on regular ones."""
    from eqtrain.training.layer_equivariance import channel_perms

    group = Group.from_name("c4")
    assert channel_perms(ensemble(1).arch, group, "cpu") == [None, None]
    perms = channel_perms(ensemble(1, fibers="regular", channels=[4, 4]).arch, group, "cpu")
    assert len(perms) == 2 and all(p.shape == (4, 16) for p in perms)
    assert torch.equal(perms[0][0], torch.arange(16)) and not torch.equal(perms[0][1], torch.arange(16))


def test_a_batch_norm_is_evaluated_in_chunks_of_the_training_batch():
    """Batch statistics (nets/layers.py) come from as many images as a training step sees: chunks of
    ``batch_norm_chunk``, whatever the memory budget would allow."""
    net = ensemble(2, channels=[4, 4], norm="batchnorm", activation="relu")
    data, group = tiny_data(), Group.from_name("c4")
    got = evaluate(net, data, group, budget=1 << 30, batch_norm_chunk=5)
    with torch.no_grad():
        logits = torch.cat([net(data.x_test[i : i + 5]) for i in range(0, len(data.y_test), 5)], 1)
        whole = net(data.x_test)
    expected = (logits.argmax(-1) == data.y_test).double().mean(1).tolist()
    assert [row["acc/test"] for row in got] == expected
    assert not torch.allclose(logits, whole)  # the chunk matters with a batch norm: the check has teeth
