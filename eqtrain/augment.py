"""Data augmentation by the group, vectorised over the batch (SPEC §4).

- ``random``: every sample gets an independent, uniformly random g each step (an unbiased
  estimate of ∇R^aug; what the paper's experiments do). One ``gather`` through the cached
  pixel permutations, no per-sample Python loop.
- ``orbit``: every sample appears under every g (the exact ∇R^aug of the batch); the batch
  grows |G|-fold.
"""

from __future__ import annotations

import torch

from .group import Group

AUGMENT_KINDS = ("random", "orbit")


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
