"""The update rules and step-size schedules of SPEC §12 are torch.optim's, for every seed of a batched network at once."""

import pytest
import torch

from eqtrain.optim.optimizer import Optimizer, UpdateRule
from eqtrain.training.schedule import StepSizeSchedule
from eqtrain.training.step import train_step

from ..helpers import make_config

RULES = {
    "sgd": (UpdateRule("sgd"), lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd_coupled_decay": (UpdateRule("sgd", weight_decay=0.01), lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=0.01)),
    "momentum": (UpdateRule("sgd", momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    "nesterov_decay": (
        UpdateRule("sgd", momentum=0.8, nesterov=True, weight_decay=0.01),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.01),
    ),
    "adam_decay": (
        UpdateRule("adam", betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
        lambda p: torch.optim.Adam(p, lr=0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
    ),
    "adamw": (
        UpdateRule("adamw", weight_decay=0.01, decoupled=True),
        lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.01),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(RULES))
def test_each_seed_takes_torch_optims_step(name):
    """Three seeds as one (3, P) tensor against torch.optim on each seed's own parameter, 6 steps of
    random gradients: the same numbers bit for bit (the same operations in the same order)."""
    rule, make_torch = RULES[name]
    generator = torch.Generator().manual_seed(0)
    flat = torch.randn(3, 50, generator=generator, dtype=torch.float64)
    grads = [torch.randn(3, 50, generator=generator, dtype=torch.float64) for _ in range(6)]
    params = [torch.nn.Parameter(row.clone()) for row in flat]
    references = [make_torch([p]) for p in params]
    optimizer = Optimizer(rule, flat)
    running = torch.ones(3, dtype=torch.bool)
    for grad in grads:
        g = grad.clone()
        if rule.coupled_decay:  # train_step adds the coupled decay to the gradient (SPEC §12)
            g.add_(flat, alpha=rule.coupled_decay)
        flat = optimizer.propose(flat, g, 0.1)
        optimizer.commit(running)
        for p, ref, row in zip(params, references, grad):
            p.grad = row.clone()
            ref.step()
    assert torch.equal(flat, torch.stack([p.detach() for p in params]))


def test_a_seed_that_diverges_keeps_its_parameters_and_its_optimizer_state():
    """Seed 1 sees a NaN image: its θ, its Adam moments and its step stay where they were; seed 0 moves on
    exactly as it would alone (SPEC §12: each seed's state is its own)."""
    from eqtrain.geometry.group import Group
    from eqtrain.nets.cnn import build_model

    cfg = make_config()
    model = build_model(cfg.model, Group.from_name("c4"), (1, 28, 28), 10, False, torch.float64, n_seeds=2)
    torch.manual_seed(0)
    with torch.no_grad():
        model.flat.normal_(0, 0.1)
    alone = build_model(cfg.model, Group.from_name("c4"), (1, 28, 28), 10, False, torch.float64, n_seeds=1)
    with torch.no_grad():
        alone.flat.copy_(model.flat[:1])
    x, y = torch.rand(2, 4, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (2, 4))
    rule = UpdateRule("adam")
    opt, opt_alone = Optimizer(rule, model.flat), Optimizer(rule, alone.flat)
    running = torch.ones(2, dtype=torch.bool)
    running = train_step(model, x, y, 0.01, 0.0, 1.0, running, opt).running
    train_step(alone, x[:1], y[:1], 0.01, 0.0, 1.0, torch.ones(1, dtype=torch.bool), opt_alone)
    before = (model.flat[1].clone(), opt.state["exp_avg"][1].clone(), opt.state["exp_avg_sq"][1].clone())
    bad = x.clone()
    bad[1, 0, 0, 0, 0] = float("nan")
    running = train_step(model, bad, y, 0.01, 0.0, 1.0, running, opt).running
    train_step(alone, bad[:1], y[:1], 0.01, 0.0, 1.0, torch.ones(1, dtype=torch.bool), opt_alone)
    assert running.tolist() == [True, False]
    after = (model.flat[1], opt.state["exp_avg"][1], opt.state["exp_avg_sq"][1])
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert torch.allclose(model.flat[:1], alone.flat, rtol=0, atol=1e-15)
    assert torch.allclose(opt.state["exp_avg_sq"][:1], opt_alone.state["exp_avg_sq"], rtol=0, atol=1e-15)
    assert not torch.equal(model.flat[0], before[0])  # seed 0 did move


def torch_rates(make_scheduler, steps: int, per_epoch: int | None) -> list[float]:
    """torch's scheduler's step sizes, stepped once per epoch of ``per_epoch`` steps (or every step)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = make_scheduler(opt)
    rates = []
    for t in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        if per_epoch is None or (t + 1) % per_epoch == 0:
            scheduler.step()
    return rates


@pytest.mark.parametrize(
    "kind,make_scheduler,per_epoch",
    [
        ("step", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5), 5),
        ("exp", lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9), 5),
        ("cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=29, eta_min=0.01), None),
    ],
)
def test_step_size_schedules_are_torchs_schedulers(kind, make_scheduler, per_epoch):
    """SPEC §12's schedules against torch's: StepLR and ExponentialLR stepped once per epoch (5 steps),
    CosineAnnealingLR every step down to lr_min at the last of 30 steps (torch's recursive form: 1e-12)."""
    ours = StepSizeSchedule(kind, 0.1, 5, 30, decay=0.5 if kind == "step" else 0.9, step_epochs=2, lr_min=0.01)
    expected = torch_rates(make_scheduler, 30, per_epoch)
    assert [ours(t) for t in range(30)] == pytest.approx(expected, rel=1e-12)


def test_a_warm_up_rises_linearly_then_hands_over_to_the_schedule():
    schedule = StepSizeSchedule("cosine", 0.1, 10, 111, lr_min=0.0, warmup_steps=10)  # the cosine: 100 steps on
    assert [schedule(t) for t in range(10)] == pytest.approx([0.01 * (t + 1) for t in range(10)], rel=1e-15)
    assert schedule(10) == 0.1  # the cosine starts at its peak after the warm-up
    assert schedule(60) == pytest.approx(0.05, rel=1e-12)
    assert schedule(110) == pytest.approx(0.0, abs=1e-15)
    assert StepSizeSchedule("constant", 0.02, 10, 100)(57) == 0.02  # the default: exactly lr, every step


def test_the_default_rule_is_plain_sgd_with_no_state():
    """optimizer=sgd (the default) keeps no state and is θ − lr·∇θ, the paper's dynamics, bit for bit."""
    flat, grad = torch.randn(2, 7), torch.randn(2, 7)
    optimizer = Optimizer(UpdateRule(), flat)
    assert optimizer.state == {}
    assert torch.equal(optimizer.propose(flat, grad.clone(), 0.3), flat.add(grad, alpha=-0.3))


def test_a_second_moment_that_overflows_stops_the_seed():
    """A float32 gradient whose square overflows leaves Adam's step finite (m/∞ = 0) but its state infinite:
    the step's finiteness check reads the proposed moment too, so the seed is frozen, not silently stuck."""
    from eqtrain.geometry.group import Group
    from eqtrain.nets.cnn import build_model

    model = build_model(make_config().model, Group.from_name("c4"), (1, 28, 28), 10, False, n_seeds=2)
    with torch.no_grad():
        model.flat.normal_(0, 0.1)
    x, y = torch.rand(2, 4, 1, 28, 28), torch.randint(0, 10, (2, 4))
    optimizer = Optimizer(UpdateRule("adam"), model.flat)
    running = train_step(model, x, y, 1e-3, 0.0, 1e25, torch.ones(2, dtype=torch.bool), optimizer).running
    assert not running.any()
    assert torch.isfinite(optimizer.state["exp_avg_sq"]).all()  # the state of the step not taken
    sane = Optimizer(UpdateRule("adam"), model.flat)
    assert train_step(model, x, y, 1e-3, 0.0, 1.0, torch.ones(2, dtype=torch.bool), sane).running.all()
