"""The training loop: one loop for the five dynamics of SPEC §4.

The modes differ only where the SPEC says they do, through the switches of ``Dynamics``:
which data the loss sees (augment), where the parameters live (constrain, decided when the
model is built) and whether γΓ is added (regularize). The regularizer's gradient is added
analytically, ∇Γ(A) = Π_{E⊥}A, pulled back to the parameters — the same Π_{E⊥}A that the
per-step distance log needs, so the two share one computation.

A run may be made of phases (e.g. equivariant, then augmented): the weights A and the biases
carry over (exactly for the orthogonal parametrization, to round-off through a basis), only the
parametrization and the switches change. Checkpoints at every epoch end and
on SIGINT / SIGTERM / SIGUSR2 make a resumed run bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from .augment import Augmenter
from .checkpoint import CHECKPOINT_FILE, config_hash, load_checkpoint, save_checkpoint
from .data import Data, load_dataset
from .group import Group
from .init import initial_weights
from .logger import Progress, RunLogger, write_json
from .metrics import distance_tags, distance_to_e, distance_vector, evaluate
from .model import EqCNN, build_model
from .modes import MODES
from .settings import ConfigError, Phase, Settings, hparams_of, validate
from .signals import StopSignals

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"  # the resolved config of the run, beside its curves
WEIGHTS_FILE = "weights.pt"
METRICS_FILE = "metrics.json"
GPU_CHECK_EVERY = 50  # steps between finiteness checks on a GPU (each one waits for the device)
HPARAM_METRICS = ["acc/test", "acc/test_orbit", "dist_to_E/total", "dist_to_E_rel/total", "equiv/test_error"]


class PlainSGD:
    """Plain SGD, θ ← θ − lr·∇θ, as one fused kernel over all parameters.

    The same arithmetic as ``torch.optim.SGD`` without momentum or weight decay (which also ends
    in ``torch._foreach_add_``), minus ~60 µs of per-step bookkeeping — a twentieth of a step of
    the paper's CNN. It has no state, so checkpoints need nothing from it.
    """

    def __init__(self, params, lr: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        params = [p for p in self.params if p.grad is not None]
        torch._foreach_add_(params, [p.grad for p in params], alpha=-self.lr)


def sgd_step(
    model: EqCNN,
    optimizer: PlainSGD,
    x: torch.Tensor,
    y: torch.Tensor,
    gamma: float,
    data_scale: float = 1.0,
    measure: bool = True,
    check: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One SGD step on data_scale·R(A) + γΓ(A) (γ = 0: no regularizer) for the batch (x, y).

    Returns the data loss R and, if ``measure``, ``distance_vector`` of A *before* the update.
    With ``check``, a non-finite loss or distance returns without updating — the weights stay the
    last finite state (the check reads values on the host: on a GPU the loop asks only now and then).
    """
    loss = F.cross_entropy(model(x), y)
    if check and not torch.isfinite(loss):
        return loss, None
    optimizer.zero_grad()
    (loss * data_scale if data_scale != 1 else loss).backward()
    dist = None
    if gamma or measure:
        with torch.no_grad():
            weights = model.weights()
            perps = model.perp(weights)
            if gamma:  # ∇(γΓ) = γ Π_{E⊥}A, pulled back to θ (SPEC §4)
                grads = [m.theta.grad for m in model.maps]
                torch._foreach_add_(grads, [m.pull_back(p) for m, p in zip(model.maps, perps)], alpha=gamma)
            if measure:  # before the update: for identity parametrizations `weights` aliases θ
                dist = distance_vector(weights, perps)
                if check and not torch.isfinite(dist[-2]):  # finite weights whose norm overflows
                    return loss, dist
    optimizer.step()
    return loss, dist


def step_tags(model: EqCNN) -> tuple[str, ...]:
    return ("loss/data", "loss/reg", "loss/total", *distance_tags(model.layer_names))


def step_row(loss: torch.Tensor, dist: torch.Tensor, gamma: float, data_scale: float) -> torch.Tensor:
    """The per-step scalars in ``step_tags`` order: R, γΓ = γ/2·d², data_scale·R + γΓ, distances.

    Leading batch dimensions (one per seed of an ensemble) are kept.
    """
    reg = dist[..., -2:-1].square().mul_(0.5 * gamma)
    data = loss[..., None]
    return torch.cat([data, reg, data * data_scale + reg if data_scale != 1 else data + reg, dist], dim=-1)


def build_for_phase(cfg, settings: Settings, phase: Phase, group: Group, data: Data, weights, biases=None) -> EqCNN:
    """The model of a phase, holding the weights A (projected onto E if constrained) and biases it starts from."""
    model = build_model(cfg.model, group, data.image_shape, data.n_classes, phase.dyn.constrain, settings.dtype)
    model = model.to(settings.device)
    model.set_weights(weights)
    with torch.no_grad():
        for b, start in zip(model.biases, biases or ()):
            b.copy_(start)
    return model


def train(cfg, run_dir: str | Path) -> dict[str, object]:
    """Train one run into ``run_dir`` (or the directory ``resume`` names); return the final metrics.

    The torch thread count a run sets (``threads``, or a resumed run's) is undone afterwards, so
    the next job of a sequential sweep in the same process starts from the default again.
    """
    threads = torch.get_num_threads()
    try:
        return _train(cfg, run_dir)
    finally:
        torch.set_num_threads(threads)


def _train(cfg, run_dir: str | Path) -> dict[str, object]:
    settings = validate(cfg)
    if cfg.seeds > 1:
        from .ensemble import train_ensemble

        return train_ensemble(cfg, settings, run_dir)
    run_dir, digest, ckpt = open_run_dir(cfg, Path(run_dir))
    device, gamma, phases = settings.device, settings.gamma, settings.phases
    data = load_dataset(cfg.dataset).to(device, settings.dtype)
    n = len(data.y_train)
    if cfg.batch_size > n:
        raise ConfigError(f"batch_size={cfg.batch_size} is not valid: larger than the training set ({n} images)")
    group = Group.from_name(cfg.group.name)
    a0 = check_models_and_start(cfg, settings, group, data)

    steps_per_epoch = math.ceil(n / cfg.batch_size)
    ends = [sum(p.epochs for p in phases[: i + 1]) for i in range(len(phases))]  # epoch where each phase ends
    total = (
        settings.epochs * steps_per_epoch
        if cfg.max_steps is None
        else min(settings.epochs * steps_per_epoch, cfg.max_steps)
    )

    def phase_at(epoch: int) -> int:
        return next((i for i, end in enumerate(ends) if epoch < end), len(phases) - 1)

    order_gen, aug_gen = _generator(cfg.seed, 1), _generator(cfg.seed, 2)
    step = epoch = position = 0
    order = None
    phase_idx = phase_at(0)
    model = build_for_phase(cfg, settings, phases[phase_idx], group, data, a0)
    twin = (
        build_for_phase(cfg, settings, Phase("equivariant", MODES["equivariant"], 0, cfg.augment), group, data, a0)
        if cfg.twin
        else None
    )
    if ckpt is not None:
        phase_idx = ckpt["phase"]
        model = build_for_phase(cfg, settings, phases[phase_idx], group, data, a0)
        model.load_state_dict(ckpt["model"])
        if twin is not None:
            twin.load_state_dict(ckpt["twin"])
        step, epoch, position, order = ckpt["step"], ckpt["epoch"], ckpt["position"], ckpt["order"].to(device)
        order_gen.set_state(ckpt["order_gen"])
        aug_gen.set_state(ckpt["aug_gen"])
        log.info("resuming %s at step %d (epoch %d, phase %d)", run_dir, step, epoch, phase_idx)
    optimizer = PlainSGD(model.parameters(), lr=cfg.lr)
    twin_opt = PlainSGD(twin.parameters(), lr=cfg.lr) if twin is not None else None

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    logger = RunLogger(run_dir, purge_step=step if ckpt is not None else None)
    if ckpt is None:
        logger.hparams(hparams_of(cfg, settings), HPARAM_METRICS)
    log.info(
        "mode=%s gamma=%g group=%s: %d parameters, dim E=%d, %d steps on %s -> %s",
        settings.mode,
        gamma,
        group.name,
        sum(p.numel() for p in model.parameters()),
        model.dim_e(),
        total,
        device,
        run_dir,
    )

    def checkpoint() -> None:
        save_checkpoint(run_dir, {
            "config_hash": digest, "step": step, "epoch": epoch, "position": position, "phase": phase_idx,
            "order": order.cpu() if order is not None else torch.zeros(0, dtype=torch.long),
            "model": model.state_dict(), "twin": twin.state_dict() if twin is not None else {},
            "order_gen": order_gen.get_state(), "aug_gen": aug_gen.get_state(), "threads": torch.get_num_threads(),
        })  # fmt: skip

    progress = Progress(total)
    started = time.time()
    status, metrics, evaluated_at = "completed", {}, -1
    if step == 0 and ckpt is None:
        metrics, evaluated_at = evaluate(model, data, group), 0
        logger.log(0, metrics)
    tags = step_tags(model)
    with StopSignals() as stop:
        while step < total and status == "completed":
            if phase_at(epoch) != phase_idx:  # a new phase: same weights A, new switches
                phase_idx = phase_at(epoch)
                model = build_for_phase(cfg, settings, phases[phase_idx], group, data, model.weights(), model.biases)
                optimizer = PlainSGD(model.parameters(), lr=cfg.lr)
                log.info("phase %d: mode=%s from step %d", phase_idx, phases[phase_idx].mode, step)
            phase = phases[phase_idx]
            augmenter = Augmenter(group, phase.augment, *data.image_shape[1:], device) if phase.dyn.augment else None
            phase_gamma = gamma if phase.dyn.regularize else 0.0
            if position == 0:
                order = torch.randperm(n, generator=order_gen) if cfg.dataset.shuffle else torch.arange(n)
                order = order.to(device)
            while position < n and step < total:
                idx = order[position : position + cfg.batch_size]
                x, y = data.x_train[idx], data.y_train[idx]
                if augmenter is not None:
                    elements = augmenter.sample(len(idx), aug_gen) if phase.augment == "random" else None
                    x, y = augmenter(x, y, elements)
                log_now = step % cfg.log_every == 0
                if twin is not None and log_now:
                    with torch.no_grad():
                        twin_dist = sum((a - b).pow(2).sum() for a, b in zip(model.weights(), twin.weights())).sqrt()
                check = device.type == "cpu" or step % GPU_CHECK_EVERY == 0
                loss, dist = sgd_step(model, optimizer, x, y, phase_gamma, cfg.data_scale, log_now, check)
                overflow = check and dist is not None and not torch.isfinite(dist[-2])  # a check syncs a GPU
                if check and (overflow or not torch.isfinite(loss)):  # sgd_step did not update
                    status = "diverged"
                    what = "the distance to E overflows" if overflow else f"the loss is {loss.item()}"
                    log.error("diverged at step %d: %s; lower lr or gamma", step, what)
                    if all(torch.isfinite(a).all() for a in model.weights()):
                        checkpoint()  # the last finite state, A_step
                    break
                if twin is not None:
                    sgd_step(twin, twin_opt, x, y, 0.0, cfg.data_scale, measure=False, check=False)
                if log_now:
                    row = step_row(loss, dist, phase_gamma, cfg.data_scale)
                    if twin is None:
                        logger.log_step(step, tags, row)
                    else:
                        logger.log_step(step, (*tags, "twin/dist"), torch.cat([row, twin_dist[None]]))
                    progress.update(epoch, step, loss, dist[-2])
                position += len(idx)
                step += 1
                if stop.requested:
                    break
            if status != "completed":
                break
            if stop.requested:
                logger.flush()
                checkpoint()
                progress.close()
                log.warning(
                    "stopped by signal %d at step %d; checkpoint written, resume with resume=true", stop.received, step
                )
                write_json(
                    run_dir / METRICS_FILE,
                    {"status": "interrupted", "steps": step, "hparams": hparams_of(cfg, settings)},
                )
                logger.close()
                stop.hand_over()
            if position >= n:  # the epoch is complete
                checkpoint()
                epoch, position = epoch + 1, 0
                metrics, evaluated_at = evaluate(model, data, group), step
                logger.log(step, metrics)
                log.info(
                    "epoch %d step %d: acc/test %.4f acc/test_orbit %.4f",
                    epoch,
                    step,
                    metrics["acc/test"],
                    metrics["acc/test_orbit"],
                )
    progress.close()
    finite = all(torch.isfinite(a).all() for a in model.weights())
    if status == "completed" and not finite:
        status = "diverged"
        log.error("diverged at step %d: the weights are not finite; lower lr or gamma", step)
    if status == "completed":
        checkpoint()
    if evaluated_at != step or not metrics:
        metrics = evaluate(model, data, group)
        logger.log(step, metrics)
    with torch.no_grad():
        final = {k: v.item() for k, v in distance_to_e(model.layer_names, model.weights(), model.perp()).items()}
    logger.log(step, final)
    if cfg.analyze and finite:
        from .stability import analyze_run  # SPEC §5.4: γ_crit and the stable window at the final point

        analyze_run(
            model, data, group, cfg.lr, run_dir, step, logger, cfg.analyze_samples, cfg.analyze_iterations,
            data_scale=cfg.data_scale,
        )  # fmt: skip
    logger.close()
    if finite:
        save_weights(run_dir / WEIGHTS_FILE, model, step)
    result = {
        **metrics,
        **final,
        "status": status,
        "steps": step,
        "epochs_done": epoch,
        "dim_E": model.dim_e(),
        "n_params": sum(p.numel() for p in model.parameters()),
        "hparams": hparams_of(cfg, settings),
    }
    write_json(run_dir / METRICS_FILE, result)
    log.info(
        "%s after %.1f s: dist_to_E/total %.3e, acc/test %.4f",
        status,
        time.time() - started,
        final["dist_to_E/total"],
        metrics["acc/test"],
    )
    return result


def open_run_dir(cfg, run_dir: Path) -> tuple[Path, str, dict | None]:
    """Where the run writes, its config hash, and the checkpoint it resumes from (if any).

    ``resume``: null/false — a fresh run, refused in a directory that already holds one; true —
    this directory's checkpoint; a path — that directory's; auto — the checkpoint if there is
    one, else a fresh start (earlier files set aside). Sets the torch thread count: the run's,
    or on resume the interrupted run's (CPU kernels split sums by thread, so bitwise exactness
    needs the same count).
    """
    if isinstance(cfg.resume, str) and cfg.resume != "auto":
        run_dir = Path(cfg.resume)
    digest = config_hash(cfg)
    resuming = cfg.resume is True or (isinstance(cfg.resume, str) and cfg.resume != "auto")
    resuming |= cfg.resume == "auto" and (run_dir / CHECKPOINT_FILE).exists()
    ckpt = load_checkpoint(run_dir, digest, cfg.force_resume) if resuming else None
    started_before = holds_run(run_dir)
    if ckpt is None and started_before and cfg.resume == "auto":
        stale = set_aside(run_dir)  # e.g. a requeued job killed before its first checkpoint
        log.warning("resume=auto: no checkpoint in %s; starting over (earlier files moved to %s)", run_dir, stale)
    elif ckpt is None and started_before:
        raise ConfigError(f"run directory {str(run_dir)!r} already holds a run; refusing to overwrite it")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    saved_threads = ckpt.get("threads") if ckpt is not None else None
    if saved_threads is not None and saved_threads != torch.get_num_threads():
        if cfg.threads:  # the user's explicit choice wins, but say what it costs
            log.warning(
                "threads=%d differs from the interrupted run's %d: not bitwise exact", cfg.threads, saved_threads
            )
        else:
            log.warning("resuming with %d torch threads, as the interrupted run had", saved_threads)
            torch.set_num_threads(saved_threads)
    return run_dir, digest, ckpt


def check_models_and_start(cfg, settings: Settings, group: Group, data: Data) -> list[torch.Tensor]:
    """Build every model the run will need (so a bad config fails before anything is written); A₀."""
    needs = [(f"mode={settings.phases[0].mode}", settings.phases[0].dyn.constrain)]
    needs += [(f"phases.{i}.mode={p.mode}", p.dyn.constrain) for i, p in enumerate(settings.phases) if i]
    needs += [("twin=true", True)] * cfg.twin
    models = []
    for reason, constrain in needs:
        try:
            models.append(build_model(cfg.model, group, data.image_shape, data.n_classes, constrain, settings.dtype))
        except ValueError as err:
            raise ConfigError(f"{reason}: {err}" if len(models) else str(err)) from err
    return initial_weights(models[0], cfg.init.scheme, cfg.init.sigma, cfg.seed)


def holds_run(run_dir: Path) -> bool:
    """Whether a directory already holds (part of) a run: its metrics or its curves."""
    return (run_dir / METRICS_FILE).exists() or any(run_dir.glob("events.out.tfevents.*"))


def set_aside(run_dir: Path) -> Path:
    """Move a run directory's eqtrain files into a new ``stale-<time>/`` folder inside it.

    Renamed so that neither TensorBoard nor ``eqtrain-plot`` mistakes them for a run.
    """
    stale = run_dir / f"stale-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9}"
    stale.mkdir()
    for path in [*run_dir.glob("events.out.tfevents.*"), *(run_dir / f for f in (METRICS_FILE, WEIGHTS_FILE))]:
        if path.exists():
            path.rename(stale / (path.name.replace("tfevents", "stale") + ".stale"))
    return stale


def save_weights(path: Path, model: EqCNN, step: int) -> None:
    """The final weights A (a list of (out, in, s) tensors, layer names alongside) and θ."""
    with torch.no_grad():
        payload = {
            "step": step,
            "constrain": model.constrain,  # which parametrization θ (state_dict) belongs to
            "layer_names": list(model.layer_names),
            "weights": [a.detach().cpu().clone() for a in model.weights()],
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _generator(seed: int, stream: int) -> torch.Generator:
    """Independent, reproducible random streams per purpose (data order, augmentation)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + stream)
