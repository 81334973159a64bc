"""Finite groups of pixel-grid symmetries (SPEC §1).

A group element is a pair (r, f): first mirror the last axis if f, then rotate by r·90°
(``torch.rot90`` on the last two axes). Every group acts on images, feature maps and conv
kernels the same way — by moving pixels — so one object serves the data, the layers and the
projections. Acting on a flattened h×w grid is a permutation of its positions; the cached
permutation turns a batched, per-sample group action into one ``gather``.

The group law is not written down per group: it is read off the action itself. Composing the
pixel permutations of two elements gives the permutation of their product, so the
multiplication table, the inverses and the regular representation (SPEC §9) are exact for every
group eqtrain knows, and for any group added later.
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

    def table(self) -> torch.Tensor:
        """Long tensor T of shape (|G|, |G|) with T[a, b] the index of the product ab: (ab)·x = a·(b·x)."""
        return _table(self).clone()

    def inverses(self) -> torch.Tensor:
        """Long tensor of shape (|G|,): the index of each element's inverse."""
        return (_table(self) == 0).long().argmax(dim=1)

    def regular_permutations(self) -> torch.Tensor:
        """Long tensor R of shape (|G|, |G|): the regular action (g·f)(h) = f(g⁻¹h) (SPEC §9) as a gather,
        (g·f)[h] = f[R[g, h]], in the same convention as ``permutations``."""
        return _table(self)[self.inverses()].clone()

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


@functools.cache
def _table(group: Group) -> torch.Tensor:
    # (a·(b·x))[j] = (b·x)[P[a, j]] = x[P[b, P[a, j]]]: the permutation of ab is P[b][P[a]]. A 3×3
    # grid is moved faithfully by every eqtrain group (its corners alone tell the elements apart).
    perms = _permutations(group, 3, 3)
    index = {tuple(p.tolist()): i for i, p in enumerate(perms)}
    if len(index) != group.order:
        raise ValueError(f"group={group.name}: its elements do not act as distinct permutations of a 3x3 grid")
    n = group.order
    table = [[index.get(tuple(perms[b][perms[a]].tolist()), -1) for b in range(n)] for a in range(n)]
    if any(v < 0 for row in table for v in row):
        raise ValueError(f"group={group.name}: its elements are not closed under composition")
    return torch.tensor(table)
