"""Benchmark: time per SGD step of each mode against the unconstrained floor (issue: speed).

The floor is a plain ``torch.nn`` CNN of the paper's shapes (``nn.Conv2d`` / ``nn.Linear``,
plain SGD; no projection, no augmentation, no logging). Each eqtrain mode runs the real
``sgd_step`` with the per-step SPEC §7 scalars logged into a real event file. All variants are
measured in one process, interleaved round by round so that machine noise cancels, and the
median over rounds is reported. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import Augmenter
from ..geometry.group import Group
from ..nets.cnn import build_model
from ..nets.init import initial_weights_of_seeds
from ..run.tblog import RunLogger
from ..schema import ModelConfig
from ..training.metrics import step_rows, step_tags
from ..training.modes import MODES, Dynamics
from ..training.step import sgd_step


def variants() -> list[tuple[str, str | None, Dynamics]]:
    """(name, augmentation kind, switches): every mode of the table, augmenting ones with random draws,
    plus orbit augmentation (|G|× the data) as its own row."""
    rows = [(name, "random" if dyn.augment else None, dyn) for name, dyn in MODES.items()]
    return rows + [("augmented_orbit", "orbit", MODES["augmented"])]


def floor_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),
        nn.AvgPool2d(2),
        nn.Tanh(),
        nn.LayerNorm((14, 14), elementwise_affine=False),
        nn.Conv2d(16, 16, 3, padding=1, bias=False),
        nn.AvgPool2d(2),
        nn.Tanh(),
        nn.LayerNorm((7, 7), elementwise_affine=False),
        nn.Flatten(),
        nn.Linear(784, 10, bias=False),
    )


def make_floor(x_all, y_all, batch):
    model = floor_model()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    n = len(y_all)

    def step(i: int) -> None:
        idx = torch.arange(i * batch, (i + 1) * batch) % n
        loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, None


def make_eqtrain(x_all, y_all, batch, augment, dyn: Dynamics, logdir, seeds: int = 1):
    """The real step of the training loop (``sgd_step`` with the per-step SPEC §7 log) for ``seeds`` seeds."""
    group = Group.from_name("c4")
    model = build_model(ModelConfig(), group, (1, 28, 28), 10, dyn.constrain, seeds=seeds)
    model.set_weights(initial_weights_of_seeds(model, "perturbed_equivariant", 1e-3, list(range(seeds))))
    augmenter = Augmenter(group, augment, 28, 28, "cpu") if augment else None
    gens = [torch.Generator().manual_seed(k) for k in range(seeds)]
    alive = torch.ones(seeds, dtype=torch.bool)
    loggers = [RunLogger(f"{logdir}/{k}") for k in range(seeds)]
    gamma = 0.1 if dyn.regularize else 0.0
    tags = step_tags(model.layer_names)
    n = len(y_all)

    def step(i: int) -> None:
        idx = (torch.arange(i * batch * seeds, (i + 1) * batch * seeds) % n).view(seeds, batch)
        x, y = x_all[idx], y_all[idx]
        if augmenter is not None:
            x, y = augmenter.seeds(x, y, gens)
        result = sgd_step(model, x, y, 1e-3, gamma, 1.0, alive)
        rows = step_rows(result.loss, result.distances.values, gamma, 1.0)
        for logger, row in zip(loggers, rows):
            logger.log_step(i, tags, row)

    return step, loggers


def measure_ensemble(n_seeds: int, batch: int, steps: int, rounds: int, warmup: int) -> dict[str, float]:
    """Model-steps per second of ``seeds=N`` (one batched network) and of N single runs one after another."""
    x_all, y_all = torch.rand(2000, 1, 28, 28), torch.randint(0, 10, (2000,))
    augreg = MODES["augreg"]
    with tempfile.TemporaryDirectory() as tmp:
        ensemble, loggers = make_eqtrain(x_all, y_all, batch, "random", augreg, f"{tmp}/e", seeds=n_seeds)
        singles = [make_eqtrain(x_all, y_all, batch, "random", augreg, f"{tmp}/{k}") for k in range(n_seeds)]

        def together(i: int) -> None:
            ensemble(i)

        def apart(i: int) -> None:
            for step, _ in singles:
                step(i)

        times: dict[str, list[float]] = {"ensemble": [], "sequential": []}
        for fn in (together, apart):
            for i in range(warmup):
                fn(i)
        for r in range(rounds):
            for name, fn in (("ensemble", together), ("sequential", apart)):
                start = time.perf_counter()
                for i in range(steps):
                    fn(r * steps + i)
                times[name].append((time.perf_counter() - start) / steps)
        for logger in [*loggers, *(lg for _, group in singles for lg in group)]:
            logger.close()
    return {name: n_seeds / statistics.median(t) for name, t in times.items()}


def measure(batch: int, steps: int, rounds: int, warmup: int) -> dict[str, float]:
    """Median seconds per step of each variant, interleaved round by round."""
    x_all, y_all = torch.rand(2000, 1, 28, 28), torch.randint(0, 10, (2000,))
    with tempfile.TemporaryDirectory() as tmp:
        runners = {"floor": make_floor(x_all, y_all, batch)}
        for name, augment, dyn in variants():
            runners[name] = make_eqtrain(x_all, y_all, batch, augment, dyn, f"{tmp}/{name}")
        times: dict[str, list[float]] = {name: [] for name in runners}
        for step, _ in runners.values():
            for i in range(warmup):
                step(i)
        for r in range(rounds):
            for name, (step, _) in runners.items():
                start = time.perf_counter()
                for i in range(steps):
                    step(r * steps + i)
                times[name].append((time.perf_counter() - start) / steps)
        for _, loggers in runners.values():
            for logger in loggers or ():
                logger.close()
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="eqtrain-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--steps", type=int, default=100, help="steps per round and variant")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=8, help="ensemble size for the seeds=N comparison (0: skip)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu", "results": {}}
    report["cpu"] = platform.processor() or platform.machine()
    for batch in args.batch:
        med = measure(batch, args.steps, args.rounds, args.warmup)
        floor = med.pop("floor")
        print(f"\nbatch {batch}: floor {floor * 1e3:.3f} ms/step (plain torch.nn CNN, SGD, no logging)")
        print(f"{'mode':<20}{'ms/step':>10}{'x floor':>10}")
        for name, t in med.items():
            print(f"{name:<20}{t * 1e3:>10.3f}{t / floor:>10.2f}")
        report["results"][str(batch)] = {
            "floor_ms": round(floor * 1e3, 4),
            "ratio_to_floor": {name: round(t / floor, 3) for name, t in med.items()},
        }
    if args.seeds:
        rates = measure_ensemble(args.seeds, 10, max(args.steps // 4, 5), args.rounds, max(args.warmup // 4, 3))
        print(f"\nseeds={args.seeds}, augreg, batch 10: model-steps/s")
        print(f"{'ensemble (seeds=N)':<20}{rates['ensemble']:>10.0f}")
        print(f"{'sequential':<20}{rates['sequential']:>10.0f}")
        print(f"{'speed-up':<20}{rates['ensemble'] / rates['sequential']:>10.2f}")
        report["ensemble"] = {
            "seeds": args.seeds,
            "model_steps_per_s": {k: round(v, 1) for k, v in rates.items()},
            "speedup": round(rates["ensemble"] / rates["sequential"], 3),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
