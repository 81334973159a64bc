"""The network-level weight space: the tuple of layer spaces, and the distance to E with names (SPEC §2, §7).

Weights A = (A_1, …, A_n) carry a leading seed axis: layer i is a tensor of shape (N, out, in, s)
for an ensemble of N seeds (N = 1 for a single run). Every projection acts on the last axes, so
it is the same computation for one seed or thirty.

Π_{E⊥}A runs every step. Layers whose channels G leaves in place take one small product each;
the layers whose channels G permutes (regular fibers, SPEC §9) are done together, as one
scatter-add of all their entries into their orbits and one gather back, so a G-CNN pays for
three kernels per step, not three per layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .projection import LayerSpace

Weights = Sequence[torch.Tensor]


def distance_tags(names: Sequence[str]) -> tuple[str, ...]:
    """The TensorBoard tags of a ``Distances`` row, in order (SPEC §7)."""
    return (*(f"dist_to_E/{n}" for n in names), "dist_to_E/total", "dist_to_E_rel/total")


@dataclass(frozen=True)
class Distances:
    """‖Π_{E⊥}A_i‖ per layer, ‖Π_{E⊥}A‖ and ‖Π_{E⊥}A‖/‖A‖ per seed: ``values`` is (N, n_layers + 2).

    Kept as one tensor on the device (the per-step log stacks it without a host sync).
    """

    values: torch.Tensor
    names: tuple[str, ...]

    @property
    def total(self) -> torch.Tensor:
        """d(A) = ‖Π_{E⊥}A‖ per seed, shape (N,)."""
        return self.values[:, len(self.names)]

    @property
    def relative(self) -> torch.Tensor:
        """d(A)/‖A‖ per seed, shape (N,)."""
        return self.values[:, len(self.names) + 1]

    @property
    def tags(self) -> tuple[str, ...]:
        return distance_tags(self.names)

    def of_seed(self, k: int) -> dict[str, float]:
        """Seed k's distances as {tag: value} (reads the device)."""
        return dict(zip(self.tags, self.values[k].tolist()))


class NetworkSpace(nn.Module):
    """The subspaces L, E and E⊥ of a whole network: one ``LayerSpace`` per learnable map, named."""

    def __init__(self, names: Sequence[str], spaces: Sequence[LayerSpace]) -> None:
        super().__init__()
        if len(names) != len(spaces):
            raise ValueError("one name per layer space")
        self.names = tuple(names)
        self.layers = nn.ModuleList(spaces)
        # The joint-orbit layers' labels, offset into one numbering (see the module docstring).
        self.joint = [i for i, space in enumerate(spaces) if space.joint]
        if self.joint:
            joint = [spaces[i] for i in self.joint]
            offsets = torch.tensor([0, *(len(s.orbit_mean_e) for s in joint)]).cumsum(0)
            orbits = torch.cat([s.orbit_of + offset for s, offset in zip(joint, offsets)])
            self.register_buffer("joint_orbit_of", orbits, persistent=False)
            self.register_buffer("joint_mean_e", torch.cat([s.orbit_mean_e for s in joint]), persistent=False)
            self.joint_sizes = [len(s.orbit_of) for s in joint]

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def project_e(self, weights: Weights) -> list[torch.Tensor]:
        """Π_E A, layer by layer (SPEC §2)."""
        return [space.project_e(a) for space, a in zip(self.layers, weights, strict=True)]

    def project_perp(self, weights: Weights) -> list[torch.Tensor]:
        """Π_{E⊥} A = A − Π_E A, layer by layer (SPEC §2): one small product per layer, or the joint-orbit layers together."""
        if not self.joint:
            return [space.project_perp(a) for space, a in zip(self.layers, weights, strict=True)]
        if len(weights) != len(self.layers):
            raise ValueError(f"{len(weights)} weight tensors for {len(self.layers)} layers")
        out = [None if space.joint else space.project_perp(a) for space, a in zip(self.layers, weights)]
        flat = torch.cat([weights[i].flatten(-3) for i in self.joint], dim=-1).double()  # exact, as the layers'
        orbit = self.joint_orbit_of
        sums = flat.new_zeros(*flat.shape[:-1], len(self.joint_mean_e)).index_add_(-1, orbit, flat)
        perp = (flat - sums.mul_(self.joint_mean_e).gather(-1, orbit.expand(flat.shape))).to(weights[0].dtype)
        for i, part in zip(self.joint, perp.split(self.joint_sizes, dim=-1)):
            out[i] = part.view(weights[i].shape)
        return out

    def distances(self, weights: Weights, perps: Weights | None = None) -> Distances:
        """d(A) per layer and in total, and d(A)/‖A‖, for every seed (weights are (N, out, in, s)).

        ``perps`` (Π_{E⊥}A, if already computed) saves the products. No ``.item()``: no host sync.
        """
        perps = self.project_perp(weights) if perps is None else perps
        n = len(perps)
        norms = torch.stack([t.flatten(1).norm(dim=1) for t in (*perps, *weights)], dim=1)  # (N, 2n)
        totals = torch.linalg.vector_norm(norms.view(-1, 2, n), dim=2)  # (N, 2): ‖Π_{E⊥}A‖, ‖A‖
        values = torch.cat([norms[:, :n], totals[:, :1], totals[:, :1] / totals[:, 1:]], dim=1)
        return Distances(values, self.names)

    def dim_e(self, shapes: Sequence[tuple[int, int]]) -> int:
        """dim E of the network, given each layer's (out, in) channel counts."""
        return sum(space.dim_e(o, i) for (o, i), space in zip(shapes, self.layers, strict=True))
