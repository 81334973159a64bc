"""Seed-batched training: N seeds of one config as one vectorised ensemble (``seeds=N``).

The N models share the architecture, the group, the data and the hyperparameters; they differ
in A₀, data order and augmentation draws — each seed's exactly as its own run would have them.
One ``torch.func.vmap`` of the loss gradient over the stacked parameters trains them together
(vmap turns the convolutions into grouped ones), so N small models cost like one wider one.
Each seed still gets its own run directory (``seed=<s>/``) with its own curves, hparams,
metrics.json and weights, as N separate runs would: a sweep's tools read them the same way.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf, open_dict
from torch.func import grad_and_value, vmap

from .augment import Augmenter
from .data import Data, load_dataset
from .group import Group
from .init import initial_weights
from .logger import RunLogger, write_json
from .metrics import distance_to_e, distance_vector, evaluate
from .model import EqCNN, build_model, logits_at
from .settings import ConfigError, Settings, hparams_of
from .train import (
    CONFIG_FILE,
    GPU_CHECK_EVERY,
    HPARAM_METRICS,
    METRICS_FILE,
    WEIGHTS_FILE,
    _generator,
    holds_run,
    save_weights,
    set_aside,
    step_row,
    step_tags,
)

log = logging.getLogger(__name__)


class SeedEnsemble:
    """N copies of a model's parameters θ, stacked on a leading axis, trained by one vmapped step."""

    def __init__(self, model: EqCNN, starts: list[list[torch.Tensor]], lr: float, gamma: float, data_scale: float):
        self.model, self.lr, self.gamma, self.data_scale = model, lr, gamma, data_scale
        thetas = []
        for a0 in starts:  # θ of each seed, through the model's own parametrization
            model.set_weights(a0)
            thetas.append([m.theta.detach().clone() for m in model.maps])
        self.thetas = [torch.stack(layer) for layer in zip(*thetas)]  # one (N, out, in, p) per layer
        self.biases = [torch.stack([b.detach().clone()] * len(starts)) for b in model.biases]
        self.bases = [m.basis for m in model.maps]
        arch = model.arch

        def loss(thetas, biases, x, y):
            weights = [t if b is None else t @ b for t, b in zip(thetas, self.bases)]
            return F.cross_entropy(logits_at(arch, weights, x, biases if arch.bias else None), y)

        self._grad = vmap(grad_and_value(loss, argnums=(0, 1)))
        self.alive = torch.ones(len(starts), dtype=torch.bool, device=self.thetas[0].device)
        self.died_at = torch.full((len(starts),), -1, dtype=torch.long, device=self.thetas[0].device)

    @property
    def size(self) -> int:
        return self.thetas[0].shape[0]

    def weights(self) -> list[torch.Tensor]:
        return [t if b is None else t @ b for t, b in zip(self.thetas, self.bases)]

    def step(self, x: torch.Tensor, y: torch.Tensor, measure: bool = True, step: int = 0):
        """One SGD step of every seed on its own batch x[k], y[k]; the same update as ``sgd_step``.

        Returns the per-seed data loss (N,) and, if ``measure``, the per-seed distances (N, L + 2)
        of A before the update (columns as ``metrics.distance_vector``). A seed whose loss,
        distance or updated weights are not finite is frozen at its last finite state: ``alive``
        turns False and ``died_at`` records ``step``, both on the device (no sync); the others go on.
        """
        (g_theta, g_bias), loss = self._grad(self.thetas, self.biases, x, y)
        with torch.no_grad():
            weights = self.weights()
            perps = [space.project_perp(a) for space, a in zip(self.model.spaces, weights)]
            alive = self.alive & torch.isfinite(loss)
            dist = None
            if measure:  # before the update: for identity parametrizations `weights` aliases θ
                dist = distance_vector(weights, perps, batched=True)
                alive &= torch.isfinite(dist[:, -2])
            scale = self.data_scale
            new_thetas = []
            for t, g, b, p in zip(self.thetas, g_theta, self.bases, perps):
                update = g * scale if scale != 1 else g
                if self.gamma:  # ∇(γΓ) = γ Π_{E⊥}A (SPEC §4)
                    update = update + self.gamma * (p if b is None else p @ b.T)
                new_thetas.append(t - self.lr * update)
                alive &= torch.isfinite(new_thetas[-1]).flatten(1).all(1)
            new_biases = [bias - self.lr * scale * g for bias, g in zip(self.biases, g_bias)]
            for new in new_biases:
                alive &= torch.isfinite(new).all(1)
            self.died_at = torch.where(self.alive & ~alive, step, self.died_at)
            self.alive = alive
            for t, new in zip([*self.thetas, *self.biases], [*new_thetas, *new_biases]):
                t.copy_(torch.where(alive.view(-1, *[1] * (t.dim() - 1)), new, t))
        return loss, dist

    @torch.no_grad()
    def load_into(self, k: int, model: EqCNN) -> EqCNN:
        """Seed k's parameters copied into ``model`` (for evaluation and saving)."""
        for m, t in zip(model.maps, self.thetas):
            m.theta.copy_(t[k])
        for b, stacked in zip(model.biases, self.biases):
            b.copy_(stacked[k])
        return model


def _augment(augmenter: Augmenter, generators, kind: str, x: torch.Tensor, y: torch.Tensor):
    """Each seed's batch augmented with that seed's own random stream (as its own run would)."""
    n_seeds, b = y.shape
    if kind == "random":
        elements = torch.cat([augmenter.sample(b, g) for g in generators])
        xa, ya = augmenter(x.flatten(0, 1), y.flatten(0, 1), elements)
        return xa.view(x.shape), ya.view(y.shape)
    xa, ya = augmenter(x.flatten(0, 1), y.flatten(0, 1))  # (|G|·N·B, ...): regroup per seed, g-major
    order = augmenter.group.order
    xa = xa.view(order, n_seeds, b, *x.shape[2:]).transpose(0, 1).flatten(1, 2)
    return xa, ya.view(order, n_seeds, b).transpose(0, 1).flatten(1, 2)


def train_ensemble(cfg, settings: Settings, run_dir: str | Path) -> dict[str, object]:
    """Train seeds cfg.seed, ..., cfg.seed + cfg.seeds − 1 together; one run directory per seed.

    ``settings`` is ``validate(cfg)``, already done by ``train``.
    """
    if cfg.resume == "auto":  # the submitit launchers' default: an ensemble has nothing to resume from
        log.warning("seeds=%d writes no checkpoints: a requeued job starts over", cfg.seeds)
    resume = cfg.resume not in (None, False, "auto")
    unsupported = {"phases": len(settings.phases) > 1, "twin": cfg.twin, "resume": resume, "analyze": cfg.analyze}
    for key, used in unsupported.items():
        if used:
            raise ConfigError(
                f"seeds={cfg.seeds} does not support {key}; run the seeds as separate jobs (-m 'seed=range(N)')"
            )
    run_dir = Path(run_dir)
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    dirs = [run_dir / f"seed={s}" for s in seeds]
    for d in dirs:
        if holds_run(d):
            if cfg.resume != "auto":
                raise ConfigError(f"run directory {str(d)!r} already holds a run; refusing to overwrite it")
            set_aside(d)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device, gamma, phase = settings.device, settings.gamma, settings.phases[0]
    data: Data = load_dataset(cfg.dataset).to(device, settings.dtype)
    n = len(data.y_train)
    if cfg.batch_size > n:
        raise ConfigError(f"batch_size={cfg.batch_size} is not valid: larger than the training set ({n} images)")
    group = Group.from_name(cfg.group.name)
    model = build_model(cfg.model, group, data.image_shape, data.n_classes, phase.dyn.constrain, settings.dtype)
    model = model.to(device)
    starts = [initial_weights(model, cfg.init.scheme, cfg.init.sigma, s) for s in seeds]
    ensemble = SeedEnsemble(model, starts, cfg.lr, gamma if phase.dyn.regularize else 0.0, cfg.data_scale)
    augmenter = Augmenter(group, phase.augment, *data.image_shape[1:], device) if phase.dyn.augment else None
    order_gens = [_generator(s, 1) for s in seeds]
    aug_gens = [_generator(s, 2) for s in seeds]
    total = phase.epochs * math.ceil(n / cfg.batch_size)
    total = total if cfg.max_steps is None else min(total, cfg.max_steps)

    loggers, configs = [], []
    for s, d in zip(seeds, dirs):
        seed_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        with open_dict(seed_cfg):
            seed_cfg.seed, seed_cfg.seeds = s, 1
        d.mkdir(parents=True, exist_ok=True)
        (d / CONFIG_FILE).write_text(OmegaConf.to_yaml(seed_cfg))
        logger = RunLogger(d)
        logger.hparams(hparams_of(seed_cfg, settings), HPARAM_METRICS)
        loggers.append(logger)
        configs.append(seed_cfg)
    log.info(
        "%d seeds as one ensemble: mode=%s gamma=%g, %d steps on %s -> %s",
        len(seeds),
        phase.mode,
        gamma,
        total,
        device,
        run_dir,
    )

    def evaluate_all(step: int) -> list[dict[str, float]]:
        results = [evaluate(ensemble.load_into(k, model), data, group) for k in range(len(seeds))]
        for k, (logger, metrics) in enumerate(zip(loggers, results)):
            if status[k] == "completed":  # a diverged seed's curves end where it stopped
                logger.log(step, metrics)
        return results

    started = time.time()
    tags = step_tags(model)
    status = ["completed"] * len(seeds)
    stopped_at = [0] * len(seeds)  # the step a diverged seed froze at
    metrics, evaluated_at = evaluate_all(0), 0
    step = epoch = 0
    while step < total and "completed" in status:
        orders = torch.stack(
            [torch.randperm(n, generator=g) if cfg.dataset.shuffle else torch.arange(n) for g in order_gens]
        )
        orders = orders.to(device)
        position = 0
        while position < n and step < total and "completed" in status:
            idx = orders[:, position : position + cfg.batch_size]  # (N, B): each seed's own batch
            x, y = data.x_train[idx], data.y_train[idx]
            if augmenter is not None:
                x, y = _augment(augmenter, aug_gens, phase.augment, x, y)
            log_now = step % cfg.log_every == 0
            loss, dist = ensemble.step(x, y, measure=log_now, step=step)
            if device.type == "cpu" or step % GPU_CHECK_EVERY == 0:  # a check waits for the device
                for k, (alive, died) in enumerate(zip(ensemble.alive.tolist(), ensemble.died_at.tolist())):
                    if not alive and status[k] == "completed":
                        status[k], stopped_at[k] = "diverged", died  # frozen at its last finite state
                        log.error("seed %d diverged at step %d; lower lr or gamma (the others go on)", seeds[k], died)
            if log_now:
                for k, row in enumerate(step_row(loss, dist, ensemble.gamma, cfg.data_scale)):
                    if status[k] == "completed":  # (on a GPU a dead seed may log NaN until the next check)
                        loggers[k].log_step(step, tags, row)
            position += idx.shape[1]
            step += 1
        if position >= n:
            epoch += 1
            metrics, evaluated_at = evaluate_all(step), step
    if evaluated_at != step:
        metrics = evaluate_all(step)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    results = []
    for k, (d, logger) in enumerate(zip(dirs, loggers)):
        ensemble.load_into(k, model)
        end = step if status[k] == "completed" else stopped_at[k]
        if status[k] != "completed":  # evaluated where it stopped, as its own run would be
            metrics[k] = evaluate(model, data, group)
            logger.log(end, metrics[k])
        with torch.no_grad():
            final = {t: v.item() for t, v in distance_to_e(model.layer_names, model.weights(), model.perp()).items()}
        logger.log(end, final)
        logger.close()
        save_weights(d / WEIGHTS_FILE, model, end)
        result = {
            **metrics[k],
            **final,
            "status": status[k],
            "steps": end,
            "epochs_done": epoch if status[k] == "completed" else end // steps_per_epoch,
            "dim_E": model.dim_e(),
            "n_params": sum(p.numel() for p in model.parameters()),
            "hparams": hparams_of(configs[k], settings),
        }
        write_json(d / METRICS_FILE, result)
        results.append(result)
    log.info("%d seeds done after %.1f s -> %s", len(seeds), time.time() - started, run_dir)
    numeric = [key for key, v in results[0].items() if isinstance(v, float)]
    summary = {key: sum(r[key] for r in results) / len(results) for key in numeric}
    return {**summary, "status": "completed" if all(s == "completed" for s in status) else "diverged", "runs": results}
