"""``eqtrain-bench --parts``: where a training step's time goes.

Each part of the real step (``training.step.train_step`` with its step log) is timed alone, on the step's own
shapes and values, forward and backward where it has both: the convolutions (with the pooling the conv path
fuses into them, ``nets.conv.conv_pool``), the activations, the normalizations, the head with the loss, Π_{E⊥}A
pulled back (the regularizer), the optimizer's update and the step log. ``other`` is the whole step less
their sum: autograd's bookkeeping, the parameters' views, copies. The parts are medians over rounds, as the
rest of the bench; they say what bounds a step, not what the step would cost without each part.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..geometry.group import Group
from ..nets.cnn import ACTIVATIONS, EqCNN, block_outputs, build_model, head_at, seed_stacked
from ..nets.conv import conv_pool
from ..nets.init import initial_weights_of_seeds
from ..nets.layers import normalize
from ..optim.optimizer import Optimizer, UpdateRule
from ..run.tblog import RunLogger
from ..schema import ModelConfig
from ..training.metrics import step_tags
from ..training.step import train_step
from ..training.steplog import StepLog

PARTS = ("convolutions", "activations", "normalization", "head and loss", "projection", "optimizer", "step log")


def _timed(fn: Callable[[], object], steps: int, rounds: int) -> float:
    """Median over rounds of seconds per call (after one call to warm up)."""
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def _fwd_bwd(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> Callable[[], None]:
    """A call of ``fn`` on leaf copies of ``inputs`` and its backward pass with a gradient of ones."""
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]

    def run() -> None:
        out = fn(*leaves)
        out.backward(torch.ones_like(out))
        for t in leaves:
            t.grad = None

    return run


def step_parts(
    model_cfg: ModelConfig, batch: int, seeds: int, steps: int, rounds: int, rule: UpdateRule | None = None
) -> dict[str, float]:
    """Seconds per step of each part of an augreg step (γ = 0.1, one random turn per image) of ``seeds`` seeds
    at ``batch``, of the whole step (``step``) and of what is left (``other``)."""
    group = Group.from_name("c4")
    model = build_model(model_cfg, group, (1, 28, 28), 10, False, n_seeds=seeds)
    model.set_weights(initial_weights_of_seeds(model, "perturbed_equivariant", 1e-3, list(range(seeds))))
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(seeds, batch, 1, 28, 28, generator=gen), torch.randint(0, 10, (seeds, batch), generator=gen)
    optimizer = Optimizer(rule, model.flat) if rule is not None else None
    parts = _layer_parts(model, x, y, steps, rounds)
    with torch.no_grad():
        flat, grad = model.flat.clone(), torch.randn_like(model.flat) * 1e-3
        a = model.space.flatten(model.weights())
    if optimizer is None:
        parts["optimizer"] = _timed(lambda: flat.add(grad, alpha=-1e-3), steps, rounds)
    else:
        running = torch.ones(seeds, dtype=torch.bool)
        parts["optimizer"] = _timed(
            lambda: (optimizer.propose(flat, grad, 1e-3), optimizer.commit(running)), steps, rounds
        )
    parts["projection"] = _timed(lambda: model.pull_back(model.space.perp_flat(a).to(flat.dtype)), steps, rounds)
    with tempfile.TemporaryDirectory() as tmp:
        loggers = [RunLogger(f"{tmp}/{k}") for k in range(seeds)]
        log = StepLog(model.space, loggers, step_tags(model.layer_names), 1.0)
        loss, diverged, running = torch.zeros(seeds), [False] * seeds, torch.ones(seeds, dtype=torch.bool)
        counter = iter(range(10**9))

        def log_step() -> None:
            log.add(next(counter), loss, a.clone(), 0.1, diverged, lr=1e-3)

        parts["step log"] = _timed(log_step, steps, rounds)

        def whole() -> None:
            result = train_step(model, x, y, 1e-3, 0.1, 1.0, running, optimizer)
            log.add(next(counter), result.loss, result.weights, 0.1, diverged, perp=result.perp, lr=1e-3)

        parts["step"] = _timed(whole, steps, rounds)
        log.flush()
        for logger in loggers:
            logger.close()
    parts["other"] = parts["step"] - sum(parts[p] for p in PARTS)
    return parts


def _layer_parts(model: EqCNN, x: torch.Tensor, y: torch.Tensor, steps: int, rounds: int) -> dict[str, float]:
    """The conv blocks' parts and the head's, each forward and backward on the step's own maps."""
    arch, weights = model.arch, [w.detach() for w in model.weights()]
    n, k, pad = weights[0].shape[0], arch.kernel_size, arch.padding_size
    act = ACTIVATIONS[arch.activation]
    norm = model.norm_state(train=True, update=False)
    with torch.no_grad():
        outputs = list(block_outputs(arch, weights, x, None, norm))
    inputs = [seed_stacked(x), *outputs[:-1]]
    parts = dict.fromkeys(("convolutions", "activations", "normalization"), 0.0)
    for i, (a, h_in) in enumerate(zip(weights[:-1], inputs)):
        filters = a.reshape(n * a.shape[1], a.shape[2], k, k)
        stride, pool, kind = arch.stride[i], arch.pool[i], arch.pool_kind

        def conv(h_, f_, stride=stride, pool=pool, kind=kind):
            return conv_pool(h_, f_, None, stride, pad, n, pool, kind)

        parts["convolutions"] += _timed(_fwd_bwd(conv, h_in, filters), steps, rounds)
        with torch.no_grad():
            c = conv(h_in, filters)
        parts["activations"] += _timed(_fwd_bwd(act, c), steps, rounds)
        if arch.norm != "none":
            size = a.shape[1] // arch.channels[i]
            block = None if norm is None else norm.blocks[i]

            def norm_fn(t, size=size, block=block):
                return normalize(t, arch.norm, size, block, True, None)

            parts["normalization"] += _timed(_fwd_bwd(norm_fn, act(c)), steps, rounds)

    def head(h_last, w_last):
        return F.cross_entropy(head_at(arch, [*weights[:-1], w_last], h_last).flatten(0, 1), y.flatten())

    parts["head and loss"] = _timed(_fwd_bwd(head, outputs[-1], weights[-1]), steps, rounds)
    return parts


def print_parts(name: str, parts: dict[str, float]) -> None:
    step = parts["step"]
    print(f"\n{name}: {step * 1e3:.2f} ms/step; each part timed alone (forward and backward):")
    for part in (*PARTS, "other"):
        print(f"  {part:<16}{parts[part] * 1e3:>9.3f} ms {parts[part] / step:>7.1%}")
