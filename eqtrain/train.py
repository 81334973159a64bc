"""The training loop: one loop for the five dynamics of SPEC §4.

The modes differ only where the SPEC says they do, through the switches of ``Dynamics``:
which data the loss sees (augment), where the parameters live (constrain, decided when the
model is built) and whether γΓ is added (regularize). The regularizer's gradient is added
analytically, ∇Γ(A) = Π_{E⊥}A, pulled back to the parameters — the same Π_{E⊥}A that the
per-step distance log needs, so the two share one computation.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from .augment import AUGMENT_KINDS, Augmenter
from .config import DEFAULT_GAMMA
from .data import load_dataset
from .group import Group
from .init import initial_weights
from .logger import Progress, RunLogger, write_json
from .metrics import distance_to_e, evaluate
from .model import EqCNN, build_model
from .modes import dynamics_from_config

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"  # the resolved config of the run, beside its curves
WEIGHTS_FILE = "weights.pt"
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEVICES = ("auto", "cpu", "cuda")
HPARAM_METRICS = ["acc/test", "acc/test_orbit", "dist_to_E/total", "dist_to_E_rel/total", "equiv/test_error"]


class ConfigError(ValueError):
    """A config value that cannot be run; the message names the key, the value and what is valid."""


@dataclass(frozen=True)
class Settings:
    """The top-level values after validation."""

    gamma: float
    device: torch.device
    dtype: torch.dtype


def validate(cfg) -> Settings:
    """Check the top-level keys before anything is loaded or written."""

    def need(ok: bool, key: str, valid: str) -> None:
        if not ok:
            raise ConfigError(f"{key}={_get(cfg, key)!r} is not valid: {valid}")

    need(cfg.gamma is None or (math.isfinite(cfg.gamma) and cfg.gamma >= 0), "gamma", "use a finite number >= 0")
    need(math.isfinite(cfg.lr) and cfg.lr > 0, "lr", "use a finite number > 0")
    need(cfg.batch_size >= 1, "batch_size", "use an int >= 1")
    need(cfg.epochs >= 0, "epochs", "use an int >= 0")
    need(cfg.max_steps is None or cfg.max_steps >= 0, "max_steps", "use an int >= 0 or null")
    need(cfg.log_every >= 1, "log_every", "use an int >= 1")
    need(math.isfinite(cfg.data_scale) and cfg.data_scale > 0, "data_scale", "use a finite number > 0")
    need(cfg.augment in AUGMENT_KINDS, "augment", f"use one of {', '.join(AUGMENT_KINDS)}")
    need(cfg.dtype in DTYPES, "dtype", f"use one of {', '.join(DTYPES)}")
    need(cfg.device in DEVICES, "device", f"use one of {', '.join(DEVICES)}")
    need(cfg.threads is None or cfg.threads >= 1, "threads", "use an int >= 1 or null")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' is not valid: no CUDA GPU is visible to torch; use device=cpu or device=auto")
    dyn = dynamics_from_config(cfg.mode)
    if dyn.regularize:
        gamma = DEFAULT_GAMMA if cfg.gamma is None else float(cfg.gamma)
    else:
        if cfg.gamma:
            log.warning(
                "gamma=%s is ignored: mode=%s has no regularizer (use augreg or nomreg)", cfg.gamma, cfg.mode.name
            )
        gamma = 0.0
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    return Settings(gamma=gamma, device=device, dtype=DTYPES[cfg.dtype])


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def hparams_of(cfg, settings: Settings) -> dict[str, object]:
    """The same keys for every run, so TensorBoard's HParams tab can compare a sweep."""
    return {
        "mode": cfg.mode.name,
        "gamma": settings.gamma,
        "group": cfg.group.name,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "support": str(cfg.model.support),
        "parametrization": cfg.model.parametrization,
        "augment": cfg.augment,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "init": cfg.init.scheme,
        "sigma": cfg.init.sigma,
        "data_scale": cfg.data_scale,
        "dtype": cfg.dtype,
    }


def sgd_step(
    model: EqCNN,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    gamma: float,
    data_scale: float = 1.0,
    measure: bool = True,
) -> tuple[torch.Tensor, list[torch.Tensor] | None, list[torch.Tensor] | None]:
    """One SGD step on data_scale·R(A) + γΓ(A) (γ = 0: no regularizer) for the batch (x, y).

    Returns the data loss R and, when ``measure`` or γ > 0, the weights A and Π_{E⊥}A *before*
    the update (for the log). A non-finite loss returns (loss, None, None) without updating.
    """
    loss = F.cross_entropy(model(x), y)
    if not torch.isfinite(loss):
        return loss, None, None
    optimizer.zero_grad(set_to_none=False)
    (loss * data_scale if data_scale != 1 else loss).backward()
    weights = perps = None
    if gamma or measure:
        with torch.no_grad():
            weights = model.weights()
            perps = model.perp(weights)
            for m, p in zip(model.maps, perps) if gamma else ():
                m.theta.grad.add_(m.pull_back(p), alpha=gamma)  # ∇(γΓ) = γ Π_{E⊥}A (SPEC §4)
    optimizer.step()
    return loss, weights, perps


def save_weights(path: Path, model, step: int) -> None:
    """The final weights A (a list of (out, in, s) tensors, layer names alongside) and θ."""
    with torch.no_grad():
        payload = {
            "step": step,
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


def train(cfg, run_dir: str | Path) -> dict[str, object]:
    """Train one run into ``run_dir``; return the final metrics (also in metrics.json)."""
    run_dir = Path(run_dir)
    settings = validate(cfg)
    if (run_dir / "metrics.json").exists() or any(run_dir.glob("events.out.tfevents.*")):
        raise ConfigError(f"run directory {str(run_dir)!r} already holds a run; refusing to overwrite it")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device, dtype, gamma = settings.device, settings.dtype, settings.gamma
    dyn = dynamics_from_config(cfg.mode)
    data = load_dataset(cfg.dataset).to(device, dtype)
    n = len(data.y_train)
    if cfg.batch_size > n:
        raise ConfigError(f"batch_size={cfg.batch_size} is larger than the training set ({n} images)")
    group = Group.from_name(cfg.group.name)
    model = build_model(cfg.model, group, data.image_shape, data.n_classes, dyn.constrain, dtype).to(device)
    model.set_weights(initial_weights(model, cfg.init.scheme, cfg.init.sigma, cfg.seed))
    augmenter = Augmenter(group, cfg.augment, *data.image_shape[1:], device) if dyn.augment else None
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    order_gen, aug_gen = _generator(cfg.seed, 1), _generator(cfg.seed, 2)

    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    logger = RunLogger(run_dir)
    logger.hparams(hparams_of(cfg, settings), HPARAM_METRICS)
    log.info(
        "mode=%s gamma=%g group=%s: %d parameters, dim E=%d, %d steps on %s",
        cfg.mode.name,
        gamma,
        group.name,
        sum(p.numel() for p in model.parameters()),
        model.dim_e(),
        total,
        device,
    )
    progress = Progress(total)
    started = time.time()
    status, metrics = "completed", evaluate(model, data, group)
    logger.log(0, metrics)
    step, epoch = 0, 0
    zero = torch.zeros((), device=device, dtype=dtype)
    while step < total:
        order = torch.randperm(n, generator=order_gen) if cfg.dataset.shuffle else torch.arange(n)
        order = order.to(device)
        for start in range(0, n, cfg.batch_size):
            if step >= total:
                break
            idx = order[start : start + cfg.batch_size]
            x, y = data.x_train[idx], data.y_train[idx]
            if augmenter is not None:
                elements = augmenter.sample(len(idx), aug_gen) if cfg.augment == "random" else None
                x, y = augmenter(x, y, elements)
            log_now = step % cfg.log_every == 0
            loss, weights, perps = sgd_step(model, optimizer, x, y, gamma, cfg.data_scale, measure=log_now)
            if weights is None and not torch.isfinite(loss):
                status = "diverged"
                log.error("diverged at step %d: the loss is %s (lower lr or gamma)", step, loss.item())
                break
            if log_now:
                with torch.no_grad():
                    dist = distance_to_e(model.layer_names, weights, perps)
                    reg = 0.5 * gamma * dist["dist_to_E/total"] ** 2 if gamma else zero
                    scalars = {"loss/data": loss, "loss/reg": reg, "loss/total": loss * cfg.data_scale + reg}
                    logger.log_step(step, {**scalars, **dist})
                progress.update(epoch, step, loss, dist["dist_to_E/total"])
            step += 1
        if status != "completed":
            break
        epoch += 1
        metrics = evaluate(model, data, group)
        logger.log(step, metrics)
        log.info(
            "epoch %d step %d: acc/test %.4f acc/test_orbit %.4f",
            epoch,
            step,
            metrics["acc/test"],
            metrics["acc/test_orbit"],
        )
    progress.close()
    with torch.no_grad():
        final = {k: v.item() for k, v in distance_to_e(model.layer_names, model.weights(), model.perp()).items()}
    logger.log(step, final)
    logger.close()
    save_weights(run_dir / WEIGHTS_FILE, model, step)
    result = {
        **metrics,
        **final,
        "status": status,
        "steps": step,
        "epochs_done": epoch,
        "wall_time_s": round(time.time() - started, 3),
        "dim_E": model.dim_e(),
        "n_params": sum(p.numel() for p in model.parameters()),
        "hparams": hparams_of(cfg, settings),
    }
    write_json(run_dir / "metrics.json", result)
    log.info(
        "done (%s): dist_to_E/total %.3e, acc/test %.4f -> %s",
        status,
        final["dist_to_E/total"],
        metrics["acc/test"],
        run_dir,
    )
    return result
