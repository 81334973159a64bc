"""One training step of every seed on data_scale·R(A) + γ_tΓ(A) (SPEC §4), plus γ_fΓ_f(A) in the
function-penalized modes (``function_penalty``), as one batched computation, by the run's update rule
(``optimizer``, SPEC §12; plain SGD without one).

The N seeds' networks are one network with seed-grouped convolutions (``nets.cnn``), so one
forward and one backward give every seed its own gradient: the loss is the sum of the seeds'
mean losses, and no seed's loss depends on another's weights. The regularizer's gradient is
added analytically, ∇Γ(A) = Π_{E⊥}A pulled back to the parameters.

Everything after the backward pass acts on whole (N, ·) tensors, whatever the number of layers:
the flat weights A and Π_{E⊥}A (``NetworkSpace``), the flat parameters (``EqCNN.flat``, of
which every parameter is a view) and the optimizer's state (``optimizer.Optimizer``). The step returns A_t, the weights it started from; their
distances to E are measured by the per-step log (``steplog``), in batches of steps; where the step
computed Π_{E⊥}A_t for the regularizer (γ_t > 0) it hands that over too. A seed whose
loss or updated parameters are not finite is frozen at its last finite state (its update, its
optimizer state and its batch norm's running statistics masked on the device, no host sync) while the
others go on; ``running`` says which seeds still train.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..nets.cnn import EqCNN
from ..optim.optimizer import Optimizer
from .function_penalty import FunctionPenalty


@dataclass(frozen=True)
class StepResult:
    loss: torch.Tensor  # (N,): each seed's data loss R on its batch, at A_t
    weights: torch.Tensor  # (N, P): A_t, every layer's entries flat (``NetworkSpace.flatten``), a copy
    running: torch.Tensor  # (N,) bool: the seeds that took the step
    perp: torch.Tensor | None = None  # (N, P) float64: Π_{E⊥}A_t where the step computed it (γ_t > 0), else None
    function: torch.Tensor | None = None  # (N,): γ_f·Γ_f at A_t where the step added it, else None


def seed_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each seed's mean cross-entropy on its own batch: logits (N, B, classes), y (N, B) → (N,)."""
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)


def train_step(
    model: EqCNN,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    gamma_t: float,
    data_scale: float,
    running: torch.Tensor,
    optimizer: Optimizer | None = None,
    penalty: FunctionPenalty | None = None,
) -> StepResult:
    """One step of size ``lr`` along ∇θ(data_scale·R + γ_tΓ [+ γ_fΓ_f with ``penalty``]) for every seed in
    ``running`` whose loss and update are finite: θ ← θ − lr·∇θ without ``optimizer`` (plain SGD, no state),
    else its update rule."""
    weights = model.weights()
    stats = model.norm_stats.clone() if model.norm_stats.numel() else None  # running statistics: updated below
    function = None
    if penalty is None:
        loss = seed_losses(model.logits(x, weights, train=True), y)
    else:  # φ_l(x) from the data loss's own forward pass; g·x's without moving the running statistics
        logits, maps = model.logits_and_maps(x, penalty.blocks, weights, train=True)
        loss = seed_losses(logits, y)
        function = penalty.value(model, x, weights, maps, logits) * penalty.strength
    for p in model.parameter_list():
        p.grad = None
    objective = loss.sum() * data_scale if data_scale != 1 else loss.sum()
    (objective if function is None else objective + function.sum()).backward()
    with torch.no_grad():
        a = model.space.flatten(weights)  # A_t, a copy: θ is updated in place below
        grad = model.flat_grad()
        perp = None
        if gamma_t:  # ∇(γ_tΓ) = γ_t Π_{E⊥}A, pulled back to θ (SPEC §4)
            perp = model.space.perp_flat(a)
            pulled = model.pull_back(perp.to(grad.dtype))
            grad[:, : pulled.shape[1]].add_(pulled, alpha=gamma_t)
        decay = 0.0 if optimizer is None else optimizer.rule.coupled_decay
        if decay:  # ∇(λ/2·‖A‖² + λ/2·‖biases‖²), A pulled back to θ (SPEC §12)
            grad.add_(_decay_direction(model, a), alpha=decay)
        new = model.flat.add(grad, alpha=-lr) if optimizer is None else optimizer.propose(model.flat, grad, lr)
        # A sum is finite only if every term is: one number per seed checks its loss and its update.
        check = new.sum(1) + loss
        if function is not None:
            check += function
        moments = None if optimizer is None else optimizer.proposed_sums()
        if moments is not None:
            check += moments
        running = running & (check - check == 0)  # x − x is 0 for finite x, NaN otherwise (2 kernels; isfinite: 5)
        torch.where(running[:, None], new, model.flat, out=model.flat)
        if optimizer is not None:
            optimizer.commit(running)
        if stats is not None:  # a frozen seed's running statistics stay where it diverged
            torch.where(running[:, None], model.norm_stats, stats, out=model.norm_stats)
    return StepResult(loss.detach(), a, running, perp, None if function is None else function.detach())


def _decay_direction(model: EqCNN, a: torch.Tensor) -> torch.Tensor:
    """∇θ of ½‖A‖² + ½‖the other parameters‖² (N, P): ``flat`` itself where θ = A, else A pulled back."""
    if model.identity_maps:
        return model.flat
    pulled = model.pull_back(a.to(model.flat.dtype))
    return torch.cat([pulled, model.flat[:, pulled.shape[1] :]], 1)
