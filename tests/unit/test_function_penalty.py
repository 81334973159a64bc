"""The function-space penalty Γ_f (modes augfn, nomfn; docs/theory.md, "The function-space penalty"):
the batched computation against its definition seed by seed, its gradient in the real training step, the
new modes through the config, the log and the sweeper."""

import pytest
import torch

from eqtrain.geometry.group import Group
from eqtrain.nets.cnn import build_model
from eqtrain.schema import ModelConfig, penalty_layers
from eqtrain.training.function_penalty import FunctionPenalty
from eqtrain.training.step import seed_losses, train_step

pytestmark = pytest.mark.usefixtures("one_thread")

C4 = Group.from_name("c4")
TOL = 1e-12  # float64 round-off, relative, on sums of a few thousand squares
# A small P4CNN (regular fields, batch norm per field) and a plain CNN of trivial fields (per-channel batch norm)
P4 = dict(fibers="regular", channels=[2, 2, 2], padding="valid", pool=[1, 2, 1], pool_kind="max", activation="relu")
Z2 = dict(P4, fibers="trivial", channels=[3, 3, 3])
ALL = ["conv1", "conv2", "conv3", "logits"]


def model_of(arch, seeds=2, stats="batch", affine=False, seed=0):
    cfg = ModelConfig(**arch, norm="batchnorm", bn_stats=stats, bn_affine=affine, layernorm=False)
    model = build_model(cfg, C4, (1, 12, 12), 10, False, torch.float64, seeds)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.flat.copy_(torch.randn(model.flat.shape, generator=gen, dtype=model.flat.dtype) * 0.5)
        if model.norm_stats.numel():
            model.norm_stats.uniform_(0.5, 1.5, generator=gen)
    return model


def images(*shape, seed=1):
    return torch.rand(*shape, 1, 12, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def reference(model, x, layers, weights=None):
    """Γ_f of every seed from its definition: every g (the identity too), one seed at a time, ρ_l(g) by
    ``FieldType.act`` (pixels moved and channels permuted), the logits compared as they are; each layer's
    squared norm divided by its entries per image."""
    fields = model.arch.field_types(C4)[1:-1]
    keep = range(len(fields))
    n = model.n_seeds
    logits, maps = model.logits_and_maps(x, keep, weights, train=True, update_stats=False)
    per_g = []
    for g in range(C4.order):
        moved_logits, moved = model.logits_and_maps(C4.act(x, g), keep, weights, train=True, update_stats=False)
        seeds = []
        for s in range(n):
            term = (
                (moved_logits[s] - logits[s]).square().sum(1).mean() / logits.shape[-1] if "logits" in layers else 0.0
            )
            for i, name in enumerate(model.layer_names[:-1]):
                if name in layers:
                    f, fg = maps[i].unflatten(1, (n, -1))[:, s], moved[i].unflatten(1, (n, -1))[:, s]
                    term = term + (fg - fields[i].act(f, g)).square().sum((1, 2, 3)).mean() / f[0].numel()
            seeds.append(term)
        per_g.append(torch.stack(seeds))
    return torch.stack(per_g).mean(0)


def penalty_value(model, x, layers, strength=1.0):
    penalty = FunctionPenalty.of(model, C4, strength, layers)
    logits, maps = model.logits_and_maps(x, penalty.blocks, train=True, update_stats=False)
    return penalty.value(model, x, model.weights(), maps, logits)


@pytest.mark.parametrize("arch", [P4, Z2], ids=["regular", "trivial"])
@pytest.mark.parametrize("layers", [["logits"], ["conv2"], ALL], ids=["logits", "conv2", "all"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared_batch", "per_seed_batches"])
def test_the_batched_penalty_is_its_definition_seed_by_seed(arch, layers, shared):
    model = model_of(arch, stats="running", affine=True)
    x = images(8) if shared else images(2, 8)
    got, expected = penalty_value(model, x, layers), reference(model, x, layers)
    assert got.shape == (2,) and bool((expected > 1e-3).all())  # off E: a penalty to compare
    torch.testing.assert_close(got, expected, rtol=TOL, atol=0)


def test_a_seed_penalty_is_the_penalty_of_its_own_network():
    """Seeds are independent: seed 1's Γ_f in a 2-seed ensemble is that of a 1-seed network with its weights."""
    pair, x = model_of(P4), images(2, 8)
    alone = model_of(P4, seeds=1)
    with torch.no_grad():
        alone.set_weights([a[1:] for a in pair.weights()])
    got = penalty_value(pair, x, ALL)[1]
    torch.testing.assert_close(got, penalty_value(alone, x[1:], ALL)[0], rtol=TOL, atol=0)


def test_the_step_descends_data_loss_plus_penalty():
    """train_step with a penalty: θ − η∇θ(R + γ_fΓ_f), Γ_f as defined (autograd of the reference), and the
    penalty it reports is γ_fΓ_f at A_t."""
    model, x, y = model_of(P4), images(2, 8), torch.randint(0, 10, (2, 8), generator=torch.Generator().manual_seed(3))
    gamma_f, lr = 0.7, 0.05
    theta = model.flat.detach().clone().requires_grad_()
    before = model.flat.detach().clone()
    with torch.no_grad():
        model.flat.copy_(theta)
    # the reference gradient, through θ's views: R + γ_fΓ_f by definition
    weights = model.weights()
    loss = seed_losses(model.logits(x, weights, train=True, update_stats=False), y)
    objective = loss.sum() + gamma_f * reference(model, x, ALL, weights).sum()
    for p in model.parameter_list():
        p.grad = None
    objective.backward()
    expected = before - lr * model.flat_grad()
    expected_penalty = gamma_f * reference(model, x, ALL).detach()
    penalty = FunctionPenalty.of(model, C4, gamma_f, ALL)
    result = train_step(model, x, y, lr, 0.0, 1.0, torch.ones(2, dtype=torch.bool), None, penalty)
    torch.testing.assert_close(result.function, expected_penalty, rtol=TOL, atol=0)
    torch.testing.assert_close(model.flat.detach(), expected, rtol=1e-10, atol=1e-13)
    assert (model.flat.detach() - before).abs().max() > 1e-3  # the step moved


def test_layer_choices_name_the_hidden_layers_and_the_logits():
    model = model_of(P4)
    assert penalty_layers(3) == (*model.layer_names[:-1], "logits")
    penalty = FunctionPenalty.of(model, C4, 1.0, ["conv3", "logits"])
    assert penalty.blocks == (2,) and penalty.logits


def test_the_memory_model_counts_the_penalty_passes():
    """The step keeps the batch's and its |G| − 1 turns' activations for the backward pass (training.footprint):
    (images per sample in a pass, passes)."""
    from eqtrain.training.footprint import step_views
    from eqtrain.training.modes import MODES
    from eqtrain.training.settings import Phase

    views = {
        (m, a): step_views(Phase(m, MODES[m], 1, a), 4)
        for m in ("augfn", "augmented", "nomfn")
        for a in ("random", "orbit")
    }
    assert views == {
        ("augfn", "random"): (1, 4), ("augfn", "orbit"): (4, 4), ("augmented", "random"): (1, 1),
        ("augmented", "orbit"): (4, 1), ("nomfn", "random"): (1, 4), ("nomfn", "orbit"): (1, 4),
    }  # fmt: skip
