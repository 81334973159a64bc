"""γ schedules (SPEC §10): exact start and end values, the shape in between, and the γ_t the step uses."""

import math

import pytest
import torch
import torch.nn.functional as F

from eqtrain.geometry.group import Group
from eqtrain.nets.cnn import build_model
from eqtrain.nets.init import initial_weights_of_seeds
from eqtrain.schema import ModelConfig
from eqtrain.training.schedule import GammaSchedule
from eqtrain.training.step import train_step


@pytest.mark.parametrize("kind", ["linear", "exp", "cosine"])
def test_every_ramp_starts_at_gamma_start_and_ends_exactly_at_gamma(kind):
    schedule = GammaSchedule(kind, gamma=10.0, start=0.01, ramp_steps=100)
    assert schedule(0) == pytest.approx(0.01, rel=1e-12)
    assert schedule(100) == schedule(10_000) == 10.0  # exactly γ from the end of the ramp on
    values = [schedule(t) for t in range(101)]
    assert all(a < b for a, b in zip(values, values[1:]))  # increasing throughout


def test_values_in_between():
    assert GammaSchedule("linear", 10.0, 0.0, 100)(25) == pytest.approx(2.5)
    assert GammaSchedule("exp", 10.0, 0.01, 100)(50) == pytest.approx(math.sqrt(0.01 * 10.0))  # geometric mean
    assert GammaSchedule("cosine", 10.0, 0.0, 100)(50) == pytest.approx(5.0)
    assert GammaSchedule("cosine", 10.0, 0.0, 100)(25) == pytest.approx(10 * (1 - math.cos(math.pi / 4)) / 2)
    assert GammaSchedule("constant", 3.0, 0.5, 100)(0) == 3.0  # constant ignores the ramp


def test_bad_schedules_name_the_key():
    with pytest.raises(ValueError, match="gamma_schedule='step'"):
        GammaSchedule("step", 1.0)
    with pytest.raises(ValueError, match="gamma_start=0.0 is not valid for gamma_schedule=exp"):
        GammaSchedule("exp", 1.0, 0.0, 10)


def test_the_step_uses_gamma_t_in_the_regularizer_gradient():
    """One SGD step at γ_t equals the hand-computed θ − lr(∇θR + γ_t Π_{E⊥}A Bᵀ) (SPEC §4, §10)."""
    schedule = GammaSchedule("linear", gamma=10.0, start=0.0, ramp_steps=4)
    gamma_t = schedule(1)
    assert gamma_t == 2.5
    model = build_model(ModelConfig(support="cross"), Group.from_name("c4"), (1, 28, 28), 10, False, torch.float64)
    model.set_weights(initial_weights_of_seeds(model, "standard", 0.0, [0]))
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 6, 1, 28, 28, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 10, (1, 6), generator=generator)
    thetas = [m.theta.detach().clone().requires_grad_() for m in model.maps]
    weights = [t @ m.basis if m.basis is not None else t for t, m in zip(thetas, model.maps)]
    from eqtrain.nets.cnn import logits_at

    loss = F.cross_entropy(logits_at(model.arch, weights, x)[0], y[0])
    grads = torch.autograd.grad(loss, thetas)
    perps = model.space.project_perp([w.detach() for w in weights])
    lr = 0.1
    expected = [
        t.detach() - lr * (g + gamma_t * m.pull_back(p)) for t, g, m, p in zip(thetas, grads, model.maps, perps)
    ]
    result = train_step(model, x, y, lr, gamma_t, 1.0, torch.ones(1, dtype=torch.bool))
    for m, e in zip(model.maps, expected):
        assert torch.allclose(m.theta, e, rtol=1e-12, atol=1e-14)
    # the Π_{E⊥}A_t it hands to the step log is that of the weights it started from, bit for bit
    assert torch.equal(result.perp, model.space.perp_flat(model.space.flatten([w.detach() for w in weights])))
    unregularized = train_step(model, x, y, lr, 0.0, 1.0, torch.ones(1, dtype=torch.bool))
    assert unregularized.perp is None
