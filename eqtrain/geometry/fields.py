"""Field types: how G acts on the channels of a feature map (SPEC §9).

A feature map is a stack of fields of one kind. A ``trivial`` field is one channel that G leaves
in place (pixels still move): the scalar fields of SPEC §1. A ``regular`` field has |G|
channels indexed by the elements h ∈ G, and g permutes them, (g·f)(h, p) = f(g⁻¹h, g⁻¹·p): the
fibres of a group convolution (Cohen & Welling 2016). Channels are field-major: channel
``field·size + h``.

Both kinds act by permuting channels, so a field type is fully described by one gather
permutation of its channels per group element — all the layers and projections ever read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .group import Group

FIBERS = ("trivial", "regular")


@dataclass(frozen=True)
class FieldType:
    """``fields`` fields of kind ``kind`` under ``group``."""

    group: Group
    kind: str
    fields: int

    def __post_init__(self) -> None:
        if self.kind not in FIBERS:
            raise ValueError(f"field type {self.kind!r} is not valid; use one of {', '.join(FIBERS)}")

    @property
    def size(self) -> int:
        """Channels per field: 1 (trivial) or |G| (regular)."""
        return self.group.order if self.kind == "regular" else 1

    @property
    def channels(self) -> int:
        return self.fields * self.size

    @property
    def permutes(self) -> bool:
        """Whether some g moves a channel (False for trivial fields, and for any field of the trivial group)."""
        return self.size > 1

    def permutations(self) -> torch.Tensor:
        """Long tensor σ of shape (|G|, channels) with (g·f)[c] = f[σ[g, c]] on the channel axis."""
        within = (
            self.group.regular_permutations()
            if self.kind == "regular"
            else torch.zeros(self.group.order, 1, dtype=torch.long)
        )  # (|G|, size): the action inside one field
        offsets = torch.arange(self.fields) * self.size
        return (offsets[None, :, None] + within[:, None, :]).reshape(self.group.order, self.channels)

    def act(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """g·x on feature maps (..., channels, H, W): pixels moved and channels permuted."""
        return self.group.act(x, index)[..., self.permutations()[index].to(x.device), :, :]
