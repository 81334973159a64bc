"""Data augmentation by the group, vectorised over the batch (SPEC §4).

- ``random``: every sample gets an independent, uniformly random g each step (an unbiased
  estimate of ∇R^aug; what the paper's experiments do). One ``gather`` through the cached
  pixel permutations, no per-sample Python loop.
- ``orbit``: every sample appears under every g (the exact ∇R^aug of the batch); the batch
  grows |G|-fold.

Batches of an ensemble carry a leading seed axis, and each seed draws its group elements from
its own generator, exactly as its own run would.
"""

from __future__ import annotations

import torch

from ..geometry.group import Group
from ..schema import AUGMENT_KINDS


class Augmenter:
    def __init__(self, group: Group, kind: str, h: int, w: int, device: torch.device | str) -> None:
        if kind not in AUGMENT_KINDS:
            raise ValueError(f"augment={kind!r} is not valid; use one of {', '.join(AUGMENT_KINDS)}")
        self.group, self.kind = group, kind
        self.perms = group.permutations(h, w).to(device)  # (|G|, h·w)

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Group-element indices for a batch (drawn on the generator's device, CPU by default)."""
        return torch.randint(self.group.order, (batch,), generator=generator)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, elements: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(g·x, y) for ``random`` with the given per-sample ``elements``; the whole orbit for ``orbit``."""
        n, c, h, w = x.shape
        flat = x.reshape(n, c, h * w)
        if self.kind == "orbit":
            out = flat[:, :, self.perms]  # (n, c, |G|, s)
            return out.permute(2, 0, 1, 3).reshape(-1, c, h, w), y.repeat(self.group.order)
        index = self.perms[elements.to(self.perms.device)]  # (n, s)
        return flat.gather(2, index[:, None, :].expand(n, c, h * w)).view(n, c, h, w), y

    def per_seed(
        self, x: torch.Tensor, y: torch.Tensor, generators: list[torch.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each seed's batch (x: (N, B, C, H, W), y: (N, B)) augmented with that seed's own stream."""
        n_seeds, b = y.shape
        if self.kind == "random":
            elements = torch.cat([self.sample(b, g) for g in generators])
            xa, ya = self(x.flatten(0, 1), y.flatten(0, 1), elements)
            return xa.view(x.shape), ya.view(y.shape)
        xa, ya = self(x.flatten(0, 1), y.flatten(0, 1))  # (|G|·N·B, ...): regroup per seed, g-major
        order = self.group.order
        xa = xa.view(order, n_seeds, b, *x.shape[2:]).transpose(0, 1).flatten(1, 2)
        return xa, ya.view(order, n_seeds, b).transpose(0, 1).flatten(1, 2)
