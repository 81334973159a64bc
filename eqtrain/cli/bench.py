"""Benchmark: time per training step of each mode, and of each optimizer, against the unconstrained floor.

The floor is a plain ``torch.nn`` CNN with the model's channel counts (``nn.Conv2d`` /
``nn.Linear``, plain SGD; no projection, no augmentation, no logging). Each eqtrain mode runs the
real ``train_step`` with the per-step SPEC §7 scalars logged into a real event file (the distances
of a round's steps measured, as the loop's step log does, inside the round's time). All variants
are measured in one process, round by round, each right after a run of the floor; the ratio to
the floor is the median over rounds of the ratio within each pair, so machine noise between
rounds cancels. Prints a table and one JSON line.

Each optimizer of SPEC §12 (plain, heavy-ball and Nesterov SGD, Adam, AdamW) is timed the same way in
the nominal mode against a floor that steps with torch.optim's same optimizer (``--optimizers``).

``--model`` picks the model preset (configs/model/): the paper CNN by default, ``gcnn`` for the
G-CNN of SPEC §9, timed against a floor of its own channel counts (16 channels under C4).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from importlib import resources

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from ..data.augment import Augmenter
from ..data.datasets import Data
from ..geometry.group import Group
from ..nets.cnn import EqCNN, build_model
from ..nets.conv import pool_in_filter
from ..nets.init import initial_weights_of_seeds
from ..optim.optimizer import Optimizer, UpdateRule
from ..run.machine import retain_freed_memory
from ..run.tblog import RunLogger
from ..schema import ModelConfig
from ..training.function_penalty import FunctionPenalty
from ..training.metrics import evaluate, step_tags
from ..training.modes import MODES, Dynamics
from ..training.step import train_step
from ..training.steplog import StepLog
from .bench_parts import print_parts, step_parts


def variants() -> list[tuple[str, str | None, Dynamics]]:
    """(name, augmentation kind, switches): every mode of the table, augmenting ones with random draws,
    plus orbit augmentation (|G|× the data) as its own row."""
    rows = [(name, "random" if dyn.augment else None, dyn) for name, dyn in MODES.items()]
    return rows + [("augmented_orbit", "orbit", MODES["augmented"])]


SHAPE, CLASSES = (1, 28, 28), 10


def model_config(name: str) -> ModelConfig:
    """A model preset of configs/model/ over the schema's defaults, as ``model=<name>`` composes it."""
    path = resources.files("eqtrain.configs").joinpath("model", f"{name}.yaml")
    if not path.is_file():
        options = sorted(
            p.name.removesuffix(".yaml") for p in resources.files("eqtrain.configs").joinpath("model").iterdir()
        )
        raise SystemExit(f"eqtrain-bench: error: --model {name} is not a model preset; valid: {', '.join(options)}")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(str(path))))


FLOOR_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


def floor_model(model: EqCNN) -> nn.Module:
    """A plain torch.nn CNN with the same channel counts, shapes and layer kinds as ``model`` (the paper
    CNN's: 1→16→16→10); its batch norm is torch's per channel, its group pooling a spatial mean."""
    arch, layers = model.arch, []
    widths = [m.channels[0] for m in model.maps[:-1]]
    for c_in, c_out, pool, (_, (h, w)) in zip([arch.in_shape[0], *widths], widths, arch.pool, arch.blocks()):
        layers += [nn.Conv2d(c_in, c_out, arch.kernel_size, padding=arch.padding_size, bias=False)]
        layers += [(nn.MaxPool2d if arch.pool_kind == "max" else nn.AvgPool2d)(pool)] if pool > 1 else []
        layers += [FLOOR_ACTIVATIONS[arch.activation]()]
        if arch.norm == "layernorm":
            layers += [nn.LayerNorm((h, w), elementwise_affine=False)]
        elif arch.norm != "none":
            layers += [nn.BatchNorm2d(c_out, affine=False, track_running_stats=False)]
    h, w = (1, 1) if arch.group_pool else arch.grids()[-1]
    layers += [nn.AdaptiveAvgPool2d(1)] if arch.group_pool else []
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(widths[-1] * h * w, arch.n_classes, bias=False))


# The optimizers timed against torch.optim's: (eqtrain's rule, torch.optim's same optimizer), lr 1e-3.
OPTIMIZERS = {
    "sgd": (UpdateRule(), lambda p: torch.optim.SGD(p, lr=1e-3)),
    "momentum": (UpdateRule(momentum=0.9), lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9)),
    "nesterov_wd": (
        UpdateRule(momentum=0.9, nesterov=True, weight_decay=5e-4),
        lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4),
    ),
    "adam": (UpdateRule("adam"), lambda p: torch.optim.Adam(p, lr=1e-3)),
    "adamw": (
        UpdateRule("adamw", weight_decay=1e-2, decoupled=True),
        lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-2),
    ),
}


def make_floor(x_all, y_all, batch, model_cfg: ModelConfig, optimizer=lambda p: torch.optim.SGD(p, lr=1e-3)):
    model = floor_model(build_model(model_cfg, Group.from_name("c4"), SHAPE, CLASSES, False))
    opt = optimizer(model.parameters())
    n = len(y_all)

    def step(i: int) -> None:
        idx = torch.arange(i * batch, (i + 1) * batch) % n
        loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, None


def make_eqtrain(
    x_all,
    y_all,
    batch,
    augment,
    dyn: Dynamics,
    logdir,
    seeds: int = 1,
    model_cfg: ModelConfig | None = None,
    rule: UpdateRule | None = None,
):
    """The real step of the training loop (``train_step`` with the per-step SPEC §7 log) for ``seeds`` seeds,
    with the optimizer of ``rule`` (plain SGD without one)."""
    group = Group.from_name("c4")
    model_cfg = ModelConfig() if model_cfg is None else model_cfg
    model = build_model(model_cfg, group, SHAPE, CLASSES, dyn.constrain, n_seeds=seeds)
    model.set_weights(initial_weights_of_seeds(model, "perturbed_equivariant", 1e-3, list(range(seeds))))
    augmenter = Augmenter(group, augment, 28, 28, "cpu") if augment else None
    gens = [torch.Generator().manual_seed(k) for k in range(seeds)]
    running = torch.ones(seeds, dtype=torch.bool)
    optimizer = Optimizer(rule, model.flat) if rule is not None else None
    loggers = [RunLogger(f"{logdir}/{k}") for k in range(seeds)]
    log = StepLog(model.space, loggers, step_tags(model.layer_names, dyn.penalize_function), 1.0)
    gamma = 0.1 if dyn.regularize else 0.0
    penalty = FunctionPenalty.of(model, group, 0.1, ["logits"]) if dyn.penalize_function else None
    diverged = [False] * seeds
    n = len(y_all)

    def step(i: int) -> None:
        idx = (torch.arange(i * batch * seeds, (i + 1) * batch * seeds) % n).view(seeds, batch)
        x, y = x_all[idx], y_all[idx]
        if augmenter is not None:
            x, y = augmenter.per_seed(x, y, gens)
        result = train_step(model, x, y, 1e-3, gamma, 1.0, running, optimizer, penalty)
        log.add(i, result.loss, result.weights, gamma, diverged, perp=result.perp, lr=1e-3, function=result.function)

    return step, (log, loggers)


def forward_flops(model: EqCNN, executed: bool = False) -> int:
    """Multiply-adds × 2 of one image's forward pass through one seed's network (convs and head): as a plain
    CNN computes it (conv at every pixel, then pooling), or with ``executed`` as eqtrain does, where a
    block's average pooling is taken into the filter (``conv.conv_pool``: a (k+p−1)² filter at the
    pooled pixels)."""
    arch, flops = model.arch, 0
    for m, ((h, w), (ph, pw)), s, p in zip(model.maps, arch.blocks(), arch.stride, arch.pool):
        out, inputs = m.channels
        if executed and pool_in_filter(s, p, arch.pool_kind):
            flops += 2 * out * inputs * (arch.kernel_size + p - 1) ** 2 * ph * pw
        else:
            flops += 2 * out * inputs * arch.kernel_size**2 * h * w
    out, inputs = model.maps[-1].channels
    return flops + 2 * out * inputs * model.maps[-1].size


def executed_flops(model_cfg: ModelConfig, batch: int, dyn: Dynamics, augment: str | None) -> int:
    """FLOPs a training step of one seed executes in its convolutions and head (``forward_flops(executed=True)``):
    forward and backward ≈ 3 forwards, per image of the batch, |G| images each under orbit augmentation and
    |G| passes with the function-space penalty."""
    group = Group.from_name("c4")
    model = build_model(model_cfg, group, SHAPE, CLASSES, dyn.constrain)
    views = (group.order if augment == "orbit" else 1) * (group.order if dyn.penalize_function else 1)
    return 3 * forward_flops(model, executed=True) * batch * views


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large float32 matmul in this process: the machine's practical peak (the best of
    ``repeats``, after one to warm up)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


def eval_cost(n_seeds: int, model_cfg: ModelConfig | None = None, repeats: int = 3) -> float:
    """Seconds per image and seed of the evaluation (``metrics.evaluate``: model and projected model, test orbit),
    the median of ``repeats`` timed evaluations after a warm-up one (a single one moved by ±20 % between runs)."""
    model_cfg = ModelConfig() if model_cfg is None else model_cfg
    group = Group.from_name("c4")
    model = build_model(model_cfg, group, SHAPE, CLASSES, False, n_seeds=n_seeds)
    data = Data(torch.rand(1000, *SHAPE), torch.randint(0, CLASSES, (1000,)), torch.rand(250, *SHAPE),
                torch.randint(0, CLASSES, (250,)), CLASSES)  # fmt: skip
    evaluate(model, data, group)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate(model, data, group)
        times.append(time.perf_counter() - start)
    images = len(data.y_train) + 2 * group.order * len(data.y_test)
    return statistics.median(times) / images / n_seeds


def close(log: tuple[StepLog, list[RunLogger]] | None) -> None:
    """Write what a variant's step log holds, and close its event files (the floor has none)."""
    if log is not None:
        log[0].flush()
        for logger in log[1]:
            logger.close()


def measure_ensemble(
    n_seeds: int, batch: int, steps: int, rounds: int, warmup: int, model_cfg: ModelConfig | None = None
) -> dict[str, float]:
    """Model-steps per second of ``seeds=N`` (one batched network) and of N single runs one after another,
    and ``peak_ratio``: the ensemble's model-steps/s over the matmul peak (FLOP/s) measured right after it
    in the same round, the median over rounds (the machine's speed moves both alike: measured apart, the
    peak moved 240–333 GFLOP/s between runs)."""
    x_all, y_all = torch.rand(2000, *SHAPE), torch.randint(0, CLASSES, (2000,))
    augreg = MODES["augreg"]
    with tempfile.TemporaryDirectory() as tmp:
        ensemble, ensemble_log = make_eqtrain(x_all, y_all, batch, "random", augreg, f"{tmp}/e", n_seeds, model_cfg)
        singles = [
            make_eqtrain(x_all, y_all, batch, "random", augreg, f"{tmp}/{k}", 1, model_cfg) for k in range(n_seeds)
        ]

        def together(i: int) -> None:
            ensemble(i)
            if i % steps == steps - 1:  # the round's distances are measured inside its time
                ensemble_log[0].flush()

        def apart(i: int) -> None:
            for step, log in singles:
                step(i)
                if i % steps == steps - 1:
                    log[0].flush()

        times: dict[str, list[float]] = {"ensemble": [], "sequential": []}
        peak_ratios = []
        for fn in (together, apart):
            for i in range(warmup):
                fn(i)
        for r in range(rounds):
            for name, fn in (("ensemble", together), ("sequential", apart)):
                start = time.perf_counter()
                for i in range(steps):
                    fn(r * steps + i)
                times[name].append((time.perf_counter() - start) / steps)
                if name == "ensemble":
                    peak_ratios.append(n_seeds / times[name][-1] / matmul_peak(repeats=3))
        for log in [ensemble_log, *(log for _, log in singles)]:
            close(log)
    rates = {name: n_seeds / statistics.median(t) for name, t in times.items()}
    return rates | {"peak_ratio": statistics.median(peak_ratios)}


def measure(
    batch: int, steps: int, rounds: int, warmup: int, model_cfg: ModelConfig | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per step of the floor and of each variant, and each variant's median ratio to the floor.

    Every round times each variant right after a run of the floor, and the ratio is taken within
    that pair: a machine that speeds up or slows down between rounds moves both alike.
    """
    model_cfg = ModelConfig() if model_cfg is None else model_cfg
    x_all, y_all = torch.rand(2000, *SHAPE), torch.randint(0, CLASSES, (2000,))
    with tempfile.TemporaryDirectory() as tmp:
        floor, _ = make_floor(x_all, y_all, batch, model_cfg)
        runners = {
            name: make_eqtrain(x_all, y_all, batch, augment, dyn, f"{tmp}/{name}", 1, model_cfg)
            for name, augment, dyn in variants()
        }
        for step in [floor, *(step for step, _ in runners.values())]:
            for i in range(warmup):
                step(i)
        times: dict[str, list[float]] = {name: [] for name in ["floor", *runners]}
        ratios: dict[str, list[float]] = {name: [] for name in runners}
        for r in range(rounds):
            for name, (step, log) in runners.items():
                times["floor"].append(timed(floor, r, steps))
                times[name].append(timed(step, r, steps, log[0]))
                ratios[name].append(times[name][-1] / times["floor"][-1])
        for _, log in runners.values():
            close(log)
    return {name: statistics.median(t) for name, t in times.items()}, {
        name: statistics.median(r) for name, r in ratios.items()
    }


def measure_optimizers(
    batch: int, steps: int, rounds: int, warmup: int, model_cfg: ModelConfig | None = None
) -> dict[str, float]:
    """Each optimizer's median ratio of the nominal step (with its step log) to a floor stepping with
    torch.optim's same optimizer, timed in pairs round by round as ``measure`` does."""
    model_cfg = ModelConfig() if model_cfg is None else model_cfg
    x_all, y_all = torch.rand(2000, *SHAPE), torch.randint(0, CLASSES, (2000,))
    ratios: dict[str, list[float]] = {name: [] for name in OPTIMIZERS}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = {
            name: (
                make_floor(x_all, y_all, batch, model_cfg, make_torch)[0],
                make_eqtrain(x_all, y_all, batch, None, MODES["nominal"], f"{tmp}/{name}", 1, model_cfg, rule),
            )
            for name, (rule, make_torch) in OPTIMIZERS.items()
        }
        for floor, (step, _) in pairs.values():
            for i in range(warmup):
                floor(i)
                step(i)
        for r in range(rounds):
            for name, (floor, (step, log)) in pairs.items():
                ratios[name].append(timed(step, r, steps, log[0]) / timed(floor, r, steps))
        for _, (_, log) in pairs.values():
            close(log)
    return {name: statistics.median(r) for name, r in ratios.items()}


def timed(step, r: int, steps: int, log: StepLog | None = None) -> float:
    """Seconds per step of ``steps`` steps of round r; a step log's distances are measured inside the time."""
    start = time.perf_counter()
    for i in range(steps):
        step(r * steps + i)
    if log is not None:
        log.flush()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="eqtrain-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[10, 100])
    parser.add_argument(
        "--steps", type=int, default=50, help="steps per round and variant (and of the floor before it)"
    )
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=30, help="ensemble size for the seeds=N comparison (0: skip)")
    parser.add_argument("--model", default="paper_cnn", help="model preset: paper_cnn (default), gcnn, deep_cnn")
    parser.add_argument(
        "--no-optimizers", action="store_true", help="skip the optimizers against torch.optim's (SPEC §12)"
    )
    parser.add_argument(
        "--parts", action="store_true", help="also where an augreg step's time goes, at each --batch and for --seeds"
    )
    args = parser.parse_args(argv)
    retain_freed_memory()  # as a run does
    model_cfg = model_config(args.model)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu", "results": {}}
    report["cpu"] = platform.processor() or platform.machine()
    report["model"] = args.model
    for batch in args.batch:
        med, ratio = measure(batch, args.steps, args.rounds, args.warmup, model_cfg)
        floor = med.pop("floor")
        peak = matmul_peak()
        executed = {name: executed_flops(model_cfg, batch, dyn, augment) for name, augment, dyn in variants()}
        print(
            f"\nmodel={args.model}, batch {batch}: floor {floor * 1e3:.3f} ms/step (plain torch.nn CNN, SGD, no logging); "
            f"% peak: FLOPs executed per second over a 2048^3 float32 matmul's ({peak / 1e9:.0f} GFLOP/s)"
        )
        print(f"{'mode':<20}{'ms/step':>10}{'x floor':>10}{'% peak':>10}")
        for name, t in med.items():
            print(f"{name:<20}{t * 1e3:>10.3f}{ratio[name]:>10.2f}{executed[name] / t / peak:>10.1%}")
        report["results"][str(batch)] = {
            "floor_ms": round(floor * 1e3, 4),
            "ratio_to_floor": {name: round(r, 3) for name, r in ratio.items()},
            "fraction_of_peak": {name: round(executed[name] / t / peak, 4) for name, t in med.items()},
            "matmul_gflops": round(peak / 1e9, 1),
        }
        if not args.no_optimizers:
            by_optimizer = measure_optimizers(batch, args.steps, args.rounds, args.warmup, model_cfg)
            print(f"{'optimizer (nominal)':<20}{'':>10}{'x floor':>10}   (the floor steps with torch.optim's same)")
            for name, r in by_optimizer.items():
                print(f"{name:<20}{'':>10}{r:>10.2f}")
            report["results"][str(batch)]["optimizer_ratio_to_floor"] = {
                k: round(r, 3) for k, r in by_optimizer.items()
            }
    if args.parts:
        report["parts_ms"] = {}
        for batch, seeds in [*((b, 1) for b in args.batch), *([(10, args.seeds)] if args.seeds else [])]:
            parts = step_parts(model_cfg, batch, seeds, max(args.steps // 5, 3), args.rounds)
            print_parts(f"model={args.model}, augreg, batch {batch}, seeds={seeds}", parts)
            report["parts_ms"][f"batch{batch}_seeds{seeds}"] = {k: round(v * 1e3, 3) for k, v in parts.items()}
    if args.seeds:
        rates = measure_ensemble(
            args.seeds, 10, max(args.steps // 4, 5), args.rounds, max(args.warmup // 4, 3), model_cfg
        )
        print(f"\nseeds={args.seeds}, augreg, batch 10: model-steps/s")
        print(f"{'ensemble (seeds=N)':<20}{rates['ensemble']:>10.0f}")
        print(f"{'sequential':<20}{rates['sequential']:>10.0f}")
        print(f"{'speed-up':<20}{rates['ensemble'] / rates['sequential']:>10.2f}")
        model = build_model(model_cfg, Group.from_name("c4"), SHAPE, CLASSES, False)
        step_flops = 3 * forward_flops(model) * 10  # forward + backward ≈ 3 forwards, batch 10, per model-step
        executed = 3 * forward_flops(model, executed=True) * 10
        peak = rates["ensemble"] / rates["peak_ratio"]  # the rounds' typical peak, for the printout
        fraction, fraction_executed = step_flops * rates["peak_ratio"], executed * rates["peak_ratio"]
        per_image = eval_cost(args.seeds, model_cfg, repeats=max(args.rounds // 3, 1))
        print(f"training step: {step_flops / 1e6:.1f} MFLOP per model-step as a plain CNN computes it, "
              f"{rates['ensemble'] * step_flops / 1e9:.1f} GFLOP/s = {fraction:.1%} of a 2048^3 float32 matmul "
              f"(~{peak / 1e9:.0f} GFLOP/s, measured in each round); executed {executed / 1e6:.1f} MFLOP: "
              f"{fraction_executed:.1%}")  # fmt: skip
        print(f"evaluation: {per_image * 1e6:.1f} us per image and seed (seeds={args.seeds})")
        report["ensemble"] = {
            "seeds": args.seeds,
            "model_steps_per_s": {k: round(rates[k], 1) for k in ("ensemble", "sequential")},
            "speedup": round(rates["ensemble"] / rates["sequential"], 3),
            "step_gflops": round(rates["ensemble"] * step_flops / 1e9, 2),
            "matmul_gflops": round(peak / 1e9, 1),
            "fraction_of_peak": round(fraction, 6),
            "fraction_of_peak_executed": round(fraction_executed, 6),
            "eval_us_per_image_seed": round(per_image * 1e6, 2),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
