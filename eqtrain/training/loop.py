"""The training loop: one loop for the five dynamics of SPEC §4, for one seed or many.

The modes differ only where the SPEC says they do, through the switches of ``Dynamics``: which
data the loss sees (augment), where the parameters live (constrain, decided when the model is
built) and whether γ_tΓ is added (regularize). N seeds of one config are one batched network
(``seeds=N``); a single run is N = 1 of the same loop.

A run may be made of phases (e.g. equivariant, then augmented): the weights A and the biases
carry over (exactly for the orthogonal parametrization, to round-off through a basis), only the
parametrization and the switches change. Checkpoints at every epoch end and on SIGINT / SIGTERM /
SIGUSR2 make a resumed run bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.augment import Augmenter
from ..data.datasets import Data, load_dataset
from ..geometry.group import Group
from ..run.checkpoint import save_checkpoint
from ..run.machine import retain_freed_memory
from ..run.progress import Progress
from ..run.signals import StopSignals
from .analyze import analyze_seeds
from .function_penalty import FunctionPenalty
from .record import Recorder, summary_of
from .run_dir import open_run_dir
from .settings import ConfigError, Settings
from .start import build_for_phase, starting_point
from .state import RunState
from .step import train_step

log = logging.getLogger("eqtrain")

GPU_CHECK_EVERY = 50  # steps between host reads of the seeds' finiteness on a GPU (each one waits for it)


def train(settings: Settings, run_dir: str | Path, overrides: Sequence[str] = ()) -> dict[str, object]:
    """Train one run (``seeds`` seeds) into ``run_dir`` (or the directory ``resume`` names); its results.

    ``overrides``: the job's command line (``mode=augreg``, ...): TensorBoard's HParams table shows
    the keys it sets first.

    The torch thread count a run sets (``threads``, or a resumed run's) is undone afterwards, so
    the next job of a sequential sweep in the same process starts from the default again.
    """
    threads = torch.get_num_threads()
    retain_freed_memory()  # large tensors freed each step are reused, not page-faulted in anew
    try:
        with StopSignals() as stop:  # from the start: a signal never meets the default handler
            return _train(settings, Path(run_dir), stop, overrides)
    finally:
        torch.set_num_threads(threads)


def _train(settings: Settings, run_dir: Path, stop: StopSignals, overrides: Sequence[str]) -> dict[str, object]:
    cfg, device = settings.config, settings.device
    run_dir, ckpt = open_run_dir(settings, run_dir)
    data = load_data(settings)
    group = Group.from_name(cfg.group.name)
    state = starting_point(settings, group, data, ckpt, run_dir)
    recorder = Recorder(settings, run_dir, state, resumed=ckpt is not None, overrides=overrides)
    n, steps_per_epoch = len(data.y_train), math.ceil(len(data.y_train) / cfg.batch_size)
    total = total_steps(settings, steps_per_epoch)
    gamma_at = settings.gamma_schedule(steps_per_epoch)
    lr_at = settings.step_sizes(steps_per_epoch, total)
    log_start(settings, state, group, total, run_dir)
    augmenter = functools.cache(lambda kind: Augmenter(group, kind, *data.image_shape[1:], device))
    penalty_of = functools.lru_cache(maxsize=1)(  # the current model's (a phase switch builds another)
        lambda model: FunctionPenalty.of(model, group, settings.gamma_f, cfg.gamma_f_layers)
    )
    progress = Progress(total, start=state.step)
    if ckpt is None:
        recorder.evaluate(state, data, group)
    while True:
        if state.position >= n:  # an epoch is complete: checkpoint, then evaluate
            save_checkpoint(run_dir, state.state_dict())
            state.epoch, state.position = state.epoch + 1, 0
            if state.epoch % cfg.eval_every == 0:
                log_epoch(state, recorder.evaluate(state, data, group))
        if state.step >= total or all(state.diverged):
            break
        phase = enter_phase(settings, state, group, data, recorder)
        if state.position == 0:
            state.new_order(n, cfg.dataset.shuffle)
        x, y = state.batch(data, cfg.batch_size)
        used = y.shape[1]
        if phase.dyn.augment:
            x, y = augmenter(phase.augment).per_seed(x, y, state.aug_gens)
        gamma_t = gamma_at(state.step) if phase.dyn.regularize else 0.0
        lr_t = lr_at(state.step)
        twin_dist = twin_distance(state) if state.twin is not None else None
        penalty = penalty_of(state.model) if phase.dyn.penalize_function else None
        result = train_step(state.model, x, y, lr_t, gamma_t, cfg.data_scale, state.running, state.optimizer, penalty)
        if state.twin is not None:
            running = torch.ones_like(state.running)
            train_step(state.twin, x, y, lr_t, 0.0, cfg.data_scale, running, state.twin_optimizer)
        if state.step % cfg.log_every == 0:
            extra = None if twin_dist is None else twin_dist[:, None]
            recorder.steps.add(
                state.step, result.loss, result.weights, gamma_t, state.diverged, extra, result.perp, lr=lr_t,
                function=result.function,
            )  # fmt: skip
            progress.update(state.step, result.loss, lambda: state.model.distances().total)
        state.after_step(result.running)
        state.position += used
        state.step += 1
        if device.type == "cpu" or state.step % GPU_CHECK_EVERY == 0:
            report_divergence(state)
        if stop.requested:
            progress.close()
            interrupt(run_dir, state, recorder, stop)
    progress.close()
    report_divergence(state)
    save_checkpoint(run_dir, state.state_dict())  # a diverged seed's is the state it diverged in
    results = recorder.finish(state, data, group, steps_per_epoch)
    if cfg.analyze:  # SPEC §5.4: γ_crit and the stable window at the final point
        analyze_seeds(settings, state, data, group, recorder.dirs, results)
    return summary_of(results)


def load_data(settings: Settings) -> Data:
    data = load_dataset(settings.config.dataset).to(settings.device, settings.dtype)
    n, batch = len(data.y_train), settings.config.batch_size
    if batch > n:
        raise ConfigError(f"batch_size={batch} is not valid: larger than the training set ({n} images)")
    if settings.config.dataset.validation is not None:
        log.info(
            "evaluating on a validation split: the last %d training images, held out (acc/test* are validation "
            "figures; the test images are not used)",
            len(data.y_test),
        )
    return data


def total_steps(settings: Settings, steps_per_epoch: int) -> int:
    total = settings.epochs * steps_per_epoch
    return total if settings.config.max_steps is None else min(total, settings.config.max_steps)


def enter_phase(settings: Settings, state: RunState, group: Group, data: Data, recorder: Recorder):
    """The phase of the current epoch; at a phase switch, the new parametrization from the same A and biases."""
    ends = [sum(p.epochs for p in settings.phases[: i + 1]) for i in range(len(settings.phases))]
    index = next((i for i, end in enumerate(ends) if state.epoch < end), len(settings.phases) - 1)
    if index != state.phase:
        recorder.steps.flush()  # measured in the space of the model that took them
        moved = settings.phases[index].dyn.constrain != settings.phases[state.phase].dyn.constrain
        state.phase = index
        state.model = build_for_phase(settings, settings.phases[index], group, data, state.model)
        if moved:  # θ now has other coordinates (E's against L's): a state in the old ones means nothing
            state.new_optimizer()  # (else the same coordinates: the optimizer's state goes on)
        fresh = " (a fresh optimizer state: new coordinates)" if moved else ""
        log.info("phase %d: mode=%s from step %d%s", index, settings.phases[index].mode, state.step, fresh)
    return settings.phases[index]


def twin_distance(state: RunState) -> torch.Tensor:
    """‖A_t − Ã_t‖ per seed: the distance to the equivariant twin (SPEC §7)."""
    with torch.no_grad():
        pairs = zip(state.model.weights(), state.twin.weights())
        return torch.stack([(a - b).flatten(1).square().sum(1) for a, b in pairs]).sum(0).sqrt()


def report_divergence(state: RunState) -> None:
    for k, step in state.newly_diverged():
        others = " (the others go on)" if len(state.seed_ids) > 1 else ""
        log.error(
            "seed %d diverged at step %d: the loss or the update is not finite; lower lr or gamma%s",
            state.seed_ids[k],
            step,
            others,
        )


def interrupt(run_dir: Path, state: RunState, recorder: Recorder, stop: StopSignals) -> None:
    """A stop signal: flush, checkpoint, mark every seed interrupted, then hand over (exits)."""
    recorder.flush()
    save_checkpoint(run_dir, state.state_dict())
    recorder.interrupted(state)
    log.warning(
        "stopped by signal %d at step %d; checkpoint written, resume with resume=true", stop.received, state.step
    )
    stop.hand_over()


def log_start(settings: Settings, state: RunState, group: Group, total: int, run_dir: Path) -> None:
    seeds = f"{len(state.seed_ids)} seeds, " if len(state.seed_ids) > 1 else ""
    cfg = settings.config
    strength = f"gamma={settings.gamma:g}"
    if any(p.dyn.penalize_function for p in settings.phases):  # (γ too: a phased run may have both)
        strength += f" gamma_f={settings.gamma_f:g} on {', '.join(cfg.gamma_f_layers)}"
    log.info(
        "mode=%s %s group=%s: %s%d parameters, dim E=%d, %d steps on %s -> %s",
        settings.mode, strength, group.name, seeds, state.model.n_params(), state.model.dim_e(), total,
        settings.device, run_dir,
    )  # fmt: skip
    schedule = "" if cfg.lr_schedule == "constant" else f", lr_schedule={cfg.lr_schedule}"
    warmup = f", warm-up {cfg.lr_warmup_epochs:g} epochs" if cfg.lr_warmup_epochs else ""
    log.info("optimizer: %s, lr %g%s%s", state.rule.describe(), cfg.lr, schedule, warmup)
    if any(p.dyn.constrain for p in settings.phases) or state.twin is not None:  # SPEC §12.3
        log.info("equivariant coordinates: %s (model.equivariant_coordinates=%s)", settings.coordinates,
                 cfg.model.equivariant_coordinates)  # fmt: skip


def log_epoch(state: RunState, metrics: list[dict[str, float]]) -> None:
    acc = sum(m["acc/test"] for m in metrics) / len(metrics)
    orbit = sum(m["acc/test_orbit"] for m in metrics) / len(metrics)
    mean = " (mean over seeds)" if len(metrics) > 1 else ""
    log.info("epoch %d step %d: acc/test %.4f acc/test_orbit %.4f%s", state.epoch, state.step, acc, orbit, mean)
