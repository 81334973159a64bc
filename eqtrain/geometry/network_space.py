"""The network-level weight space: the tuple of layer spaces, and the distance to E with names (SPEC §2, §7).

Weights A = (A_1, …, A_n) carry a leading seed axis: layer i is a tensor of shape (N, out, in, s)
for an ensemble of N seeds (N = 1 for a single run). Every projection acts on the last axes, so
it is the same computation for one seed or thirty.

Π_{E⊥}A (every step of a regularized mode) and the distances (every logged step, measured in
batches of steps) are done on the whole network at once, on the flat vector of all its entries
(``flatten``). Every entry of every layer carries its orbit's label (G acts on each layer's index
triples; SPEC §2, §9), so Π_{E⊥} of the whole network is one scatter-add of the entries into their
orbits and one gather back, however many layers there are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .layer_space import LayerSpace

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
    """The subspaces L, E and E⊥ of a whole network: one ``LayerSpace`` per learnable map, named.

    ``channels`` gives each layer's (out, in) channel counts: with them every entry of the network
    has an orbit label (see the module docstring).
    """

    def __init__(self, names: Sequence[str], spaces: Sequence[LayerSpace], channels: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        if not len(names) == len(spaces) == len(channels):
            raise ValueError("one name and one (out, in) pair per layer space")
        self.names = tuple(names)
        self.layers = nn.ModuleList(spaces)
        self.sizes = [o * i * space.size for space, (o, i) in zip(spaces, channels)]  # entries per layer
        labels, means, offset = [], [], 0
        for space, (o, i) in zip(spaces, channels):
            label, mean_e = space.entry_orbits(o, i)
            labels.append(label + offset)
            means.append(mean_e)
            offset += len(mean_e)
        self.register_buffer("orbit_of", torch.cat(labels), persistent=False)  # (P,): every entry's orbit
        self.register_buffer("mean_e", torch.cat(means).double(), persistent=False)  # (n_orbits,)

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def flatten(self, weights: Weights) -> torch.Tensor:
        """The flat vector of every entry of A: (..., P) from one (..., out, in, s) tensor per layer."""
        if len(weights) != len(self.layers):
            raise ValueError(f"{len(weights)} weight tensors for {len(self.layers)} layers")
        return torch.cat([a.flatten(-3) for a in weights], dim=-1)

    def unflatten(self, flat: torch.Tensor, like: Weights) -> list[torch.Tensor]:
        """The per-layer views of a flat (..., P) vector, shaped as ``like``."""
        return [part.view(a.shape) for part, a in zip(flat.split(self.sizes, dim=-1), like, strict=True)]

    def perp_flat(self, flat: torch.Tensor) -> torch.Tensor:
        """Π_{E⊥} of a flat (..., P) vector, in float64 whatever its dtype (SPEC §2); a new tensor.

        An orbit's entries are summed in float64, where float32 values add exactly; the weights of
        Π_E are 1/|orbit| (orbits of 1, 2, 4 or 8 entries: exact in binary), so weights on E have a
        distance of exactly 0 and the regularizer injects no round-off off E.
        """
        wide = flat.to(torch.float64, copy=True)
        orbit = self.orbit_of
        sums = wide.new_zeros(*wide.shape[:-1], len(self.mean_e)).index_add_(-1, orbit, wide).mul_(self.mean_e)
        return wide.sub_(sums.gather(-1, orbit.expand(wide.shape)))

    def project_e(self, weights: Weights) -> list[torch.Tensor]:
        """Π_E A, layer by layer (SPEC §2)."""
        return [space.project_e(a) for space, a in zip(self.layers, weights, strict=True)]

    def project_perp(self, weights: Weights) -> list[torch.Tensor]:
        """Π_{E⊥} A = A − Π_E A, per layer, in the weights' dtype (SPEC §2)."""
        perp = self.perp_flat(self.flatten(weights)).to(weights[0].dtype)
        return self.unflatten(perp, weights)

    def distances_flat(self, flat: torch.Tensor, perp: torch.Tensor | None = None) -> Distances:
        """The ``Distances`` of flat weights A (R, P), one row per seed (or per seed and step).

        Every row is reduced on its own, in pieces short enough for one thread, so a row's
        distances do not depend on the other rows: a step's log is the same computed alone or with
        others (a resumed run's curves equal an uninterrupted run's bit for bit). ``perp`` is
        ``perp_flat(flat)`` where the caller has it already (the regularized step): the same numbers,
        not computed twice.
        """
        perp = self.perp_flat(flat) if perp is None else perp
        layers = torch.stack([_row_norms(part) for part in perp.split(self.sizes, dim=-1)], dim=-1)
        total = torch.linalg.vector_norm(layers, dim=-1, keepdim=True)
        norm_a = _row_norms(flat).to(total.dtype)[:, None]
        return Distances(torch.cat([layers, total, total / norm_a], dim=-1), self.names)

    def distances(self, weights: Weights) -> Distances:
        """d(A) per layer and in total, and d(A)/‖A‖, for every seed (weights are (N, out, in, s)).

        No ``.item()``: no host sync.
        """
        return self.distances_flat(self.flatten(weights))

    def dim_e(self, shapes: Sequence[tuple[int, int]]) -> int:
        """dim E of the network, given each layer's (out, in) channel counts."""
        return sum(space.dim_e(o, i) for (o, i), space in zip(shapes, self.layers, strict=True))


ROW_PIECE = 2**14  # entries reduced by one thread: below torch's parallel grain (32768)


def _row_norms(x: torch.Tensor) -> torch.Tensor:
    """The Euclidean norm of every row of x (R, m), each row alone and in a fixed order whatever R is.

    torch splits a long single row between threads but not the rows of a batch, which would change
    the order of the additions; pieces of ``ROW_PIECE`` entries are always reduced by one thread.
    """
    if x.shape[-1] <= ROW_PIECE:
        return torch.linalg.vector_norm(x, dim=-1)
    pieces = [torch.linalg.vector_norm(part, dim=-1) for part in x.split(ROW_PIECE, dim=-1)]
    return torch.linalg.vector_norm(torch.stack(pieces, dim=-1), dim=-1)
