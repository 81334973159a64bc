"""The function-space penalty: the equivariance error of the network's features made a loss.

    Γ_f(A) = mean over the batch's images x and g ∈ G of Σ_{l ∈ layers} ‖φ_l(g·x) − ρ_l(g)·φ_l(x)‖² / D_l

with φ_l the output of conv block l (as e_l of SPEC §11 measures it, ``layer_equivariance``) or the logits
(ρ trivial: ‖f(g·x) − f(x)‖²/classes, the usual invariance or consistency loss as a mean squared error),
summed over ``gamma_f_layers``. D_l is the number of entries of one image's φ_l: each layer's term is a mean
over its entries, so γ_f means the same for a 12 544-entry first layer as for 10 logits (summed, the first
layer's curvature on E⊥ made plain SGD at lr 0.01 and γ_f = 1 unstable on E: d(A) grew 1000× a step).

The modes augfn and nomfn add γ_f·Γ_f to the data loss. Unlike γΓ it needs no projection, so it is what a user
can put on any network; its price is |G| − 1 more forward and backward passes per step, one per g ≠ e (the
identity's term is 0 and is not computed). Each g turns the step's whole batch, so a batch norm that trains on
the batch's statistics normalizes g·x with g·x's own: per-field statistics are the same numbers for x and g·x
(SPEC §11), which keeps Γ_f exactly 0 on E.

What holds (docs/theory.md, "The function-space penalty"; tests/theory/test_function_penalty.py): on E,
Γ_f = 0 and ∇Γ_f = 0 (a sum of squares of functions that vanish on E), so orbit-augmented training with
it stays on E (SPEC §5.1); off E its gradient is not Π_{E⊥}A — it moves the part of A in E too, and how
fast it shrinks d(A) depends on A and the data, not on γ_f alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..geometry.group import Group
from ..nets.cnn import EqCNN
from ..schema import LOGITS
from .layer_equivariance import act_on_maps, channel_perms


@dataclass(frozen=True)
class FunctionPenalty:
    """γ_f·Γ_f on the named layers of one model (its channel permutations ρ_l(g) built once)."""

    strength: float
    group: Group
    blocks: tuple[int, ...]  # 0-based conv blocks whose maps are penalized
    logits: bool  # whether the logits are
    perms: tuple[torch.Tensor | None, ...]  # ρ_l(g) on the channels of every block (None: no g moves one)

    @classmethod
    def of(cls, model: EqCNN, group: Group, strength: float, layers: Sequence[str]) -> FunctionPenalty:
        names = model.layer_names[:-1]
        blocks = tuple(i for i, name in enumerate(names) if name in layers)
        perms = tuple(channel_perms(model.arch, group, model.flat.device))
        return cls(strength, group, blocks, LOGITS in layers, perms)

    def value(
        self,
        model: EqCNN,
        x: torch.Tensor,
        weights: Sequence[torch.Tensor],
        maps: dict[int, torch.Tensor],
        logits: torch.Tensor,
    ) -> torch.Tensor:
        """Γ_f of every seed (N,), differentiable in A: ``maps`` and ``logits`` are φ_l(x) and f(x) from the
        step's own forward pass (``EqCNN.logits_and_maps`` with ``blocks``); x is (N, B, ...) or (B, ...)."""
        n, group = model.n_seeds, self.group
        total = logits.new_zeros(n)
        for g in range(1, group.order):
            moved_logits, moved = model.logits_and_maps(group.act(x, g), self.blocks, weights, True, False)
            for i in self.blocks:
                f, fg = maps[i].unflatten(1, (n, -1)), moved[i].unflatten(1, (n, -1))  # (B, N, C, H, W)
                expected = act_on_maps(group, f, g, self.perms[i])  # ρ_l(g)·φ_l(x)
                total = total + (fg - expected).square().flatten(2).mean(-1).mean(0)
            if self.logits:
                total = total + (moved_logits - logits).square().mean(-1).mean(1)  # (N, B, classes) -> (N,)
        return total / group.order
