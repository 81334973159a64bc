"""Finite groups of pixel-grid symmetries (SPEC §1).

A group element is a pair (r, f): first mirror the last axis if f, then rotate by r·90°
(``torch.rot90`` on the last two axes). Every group acts on images, feature maps and conv
kernels the same way — by moving pixels — so one object serves the data, the layers and the
projections. Acting on a flattened h×w grid is a permutation of its positions; the cached
permutation turns a batched, per-sample group action into one ``gather``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

# name -> the (rotations, flip) pairs that make up the group; identity first.
_ELEMENTS: dict[str, tuple[tuple[int, bool], ...]] = {
    "c4": ((0, False), (1, False), (2, False), (3, False)),
    "c2": ((0, False), (2, False)),
    "d4": tuple((r, f) for f in (False, True) for r in range(4)),
    "flip": ((0, False), (0, True)),
}
GROUP_NAMES = tuple(_ELEMENTS)


@dataclass(frozen=True)
class Group:
    """A finite group G acting on the last two axes of tensors by pixel permutations."""

    name: str
    elements: tuple[tuple[int, bool], ...]

    @classmethod
    def from_name(cls, name: str) -> Group:
        if name not in _ELEMENTS:
            raise ValueError(f"group={name!r} is not a known group; valid: {', '.join(GROUP_NAMES)}")
        return cls(name, _ELEMENTS[name])

    @property
    def order(self) -> int:
        return len(self.elements)

    @property
    def needs_square(self) -> bool:
        """Quarter-turns map an h×w grid to w×h: such a group acts only on square grids."""
        return any(r % 2 for r, _ in self.elements)

    def act(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """g·x for the element ``index`` of the group, on the last two axes of ``x``."""
        r, f = self.elements[index]
        if f:
            x = torch.flip(x, dims=(-1,))
        return torch.rot90(x, k=r, dims=(-2, -1)) if r else x

    def orbit(self, x: torch.Tensor) -> torch.Tensor:
        """All g·x stacked along a new leading axis of length |G|."""
        return torch.stack([self.act(x, i) for i in range(self.order)])

    def permutations(self, h: int, w: int) -> torch.Tensor:
        """Long tensor P of shape (|G|, h·w) with (g·x).flatten()[j] = x.flatten()[P[g, j]]."""
        return _permutations(self, h, w).clone()

    def orbit_ids(self, h: int, w: int) -> torch.Tensor:
        """For each position of an h×w grid, a label of its G-orbit (the orbit's smallest index)."""
        return self.permutations(h, w).min(dim=0).values

    def num_orbits(self, h: int, w: int) -> int:
        return int(self.orbit_ids(h, w).unique().numel())

    def check_grid(self, h: int, w: int, what: str) -> None:
        if self.needs_square and h != w:
            raise ValueError(
                f"group={self.name} rotates by 90° and needs square {what}, got {h}×{w}; "
                "use a square dataset.image_size, or group=c2 or group=flip for non-square images"
            )


@functools.cache
def _permutations(group: Group, h: int, w: int) -> torch.Tensor:
    group.check_grid(h, w, "grids")
    grid = torch.arange(h * w).view(h, w)
    return torch.stack([group.act(grid, i).reshape(-1) for i in range(group.order)])
