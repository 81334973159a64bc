"""One SGD step of every seed on data_scale·R(A) + γ_tΓ(A) (SPEC §4), as one batched computation.

The N seeds' networks are one network with seed-grouped convolutions (``nets.cnn``), so one
forward and one backward give every seed its own gradient: the loss is the sum of the seeds'
mean losses, and no seed's loss depends on another's weights. The regularizer's gradient is
added analytically, ∇Γ(A) = Π_{E⊥}A pulled back to the parameters — the same Π_{E⊥}A that the
per-step distance log needs, so the two share one computation.

A seed whose loss, distance or updated weights are not finite is frozen at its last finite
state (its update masked on the device, no host sync) while the others go on; ``alive`` says
which seeds still train.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..geometry.space import Distances
from ..nets.cnn import EqCNN


@dataclass(frozen=True)
class StepResult:
    loss: torch.Tensor  # (N,): each seed's data loss R on its batch, at A_t
    distances: Distances  # of A_t, before the update
    alive: torch.Tensor  # (N,) bool: the seeds that took the step


def seed_losses(model: EqCNN, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each seed's mean cross-entropy on its own batch: x (N, B, C, H, W), y (N, B) → (N,)."""
    logits = model(x)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)


def sgd_step(
    model: EqCNN,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    gamma: float,
    data_scale: float,
    alive: torch.Tensor,
) -> StepResult:
    """θ ← θ − lr·∇θ(data_scale·R + γΓ) for every seed in ``alive`` whose loss and distance are finite."""
    loss = seed_losses(model, x, y)
    params = list(model.parameters())
    for p in params:
        p.grad = None
    (loss.sum() * data_scale if data_scale != 1 else loss.sum()).backward()
    with torch.no_grad():
        weights = model.weights()
        perps = model.space.project_perp(weights)
        distances = model.space.distances(weights, perps)  # before the update (weights may alias θ)
        alive = alive & torch.isfinite(loss) & torch.isfinite(distances.values).all(1)
        if gamma:  # ∇(γΓ) = γ Π_{E⊥}A, pulled back to θ (SPEC §4)
            grads = [m.theta.grad for m in model.maps]
            torch._foreach_add_(grads, [m.pull_back(p) for m, p in zip(model.maps, perps)], alpha=gamma)
        new = torch._foreach_add(params, [p.grad for p in params], alpha=-lr)
        # A seed whose update overflows keeps its last finite state (a sum is finite only if every term is).
        alive = alive & torch.isfinite(torch.stack([q.flatten(1).sum(1) for q in new]).sum(0))
        for p, q in zip(params, new):
            p.copy_(torch.where(alive.view(-1, *[1] * (p.dim() - 1)), q, p))
    return StepResult(loss.detach(), distances, alive)
