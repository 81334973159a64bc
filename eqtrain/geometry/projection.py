"""Exact projections onto H_G, L, E and E⊥ for one layer, in weight space (SPEC §2).

A layer's weight is stored as a tensor of shape (..., out, in, s): s = h·w spatial positions
(a k×k kernel, or the (h, w) grid the linear head reads per channel). The group acts on the
spatial axis by a permutation, so every projection is a right-multiplication by an s×s matrix
— a cached small matmul, not a loop over orbits.
"""

from __future__ import annotations

import torch
from torch import nn

from .group import Group


class LayerSpace(nn.Module):
    """The subspaces L, H_G and E = H_G ∩ L of one layer's weights.

    ``mask`` is the support ω over the spatial grid (all True for the linear head). The
    matrices are computed in float64 and stored in ``dtype`` (build in float64 directly rather
    than casting later, so float64 runs see float64-exact projections).
    """

    def __init__(
        self,
        group: Group,
        h: int,
        w: int,
        mask: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        mask = torch.ones(h, w, dtype=torch.bool) if mask is None else mask.bool()
        if mask.shape != (h, w):
            raise ValueError(f"support of shape {tuple(mask.shape)} does not match the {h}x{w} grid")
        perms = group.permutations(h, w)  # (|G|, s)
        omega = mask.reshape(-1)
        # ω_G = ∩_g g·ω, with (g·ω)[j] = ω[perm[g, j]] (SPEC §2).
        omega_g = omega[perms].all(dim=0)
        orbit = perms.min(dim=0).values  # orbit label of every position
        labels = orbit.unique()
        indicator = (orbit[:, None] == labels[None, :]).double()  # (s, n_orbits)
        # Π_H: average over each orbit (the group average of SPEC §2), as an s×s matrix.
        p_h = indicator @ (indicator / indicator.sum(0)).T
        inside = omega_g[labels]  # orbits contained in ω_G (ω_G is a union of orbits)
        basis = indicator[:, inside] / indicator[:, inside].sum(0).sqrt()  # orthonormal basis of E
        self.group, self.h, self.w = group, h, w
        self.register_buffer("omega", omega, persistent=False)
        self.register_buffer("omega_g", omega_g, persistent=False)
        self.register_buffer("p_h", p_h.to(dtype), persistent=False)
        self.register_buffer("basis_e", basis.to(dtype), persistent=False)  # (s, dim E per channel pair)
        # P_E = Σ_{orbits o ⊂ ω_G} 1_o 1_oᵀ / |o|, built from the indicators rather than as U Uᵀ so
        # that its entries (0 or 1/|o|, orbits of 1, 2, 4 or 8 positions) are exact in binary; so
        # are those of I − P_E, which gives Π_{E⊥} in one product.
        p_e = indicator[:, inside] @ (indicator[:, inside] / indicator[:, inside].sum(0)).T
        self.register_buffer("p_e", p_e.to(dtype), persistent=False)
        # Π_{E⊥} is applied in float64 whatever the run's dtype: its entries (0, 1/|o|, 1 − 1/|o|) are
        # exact, and in float64 so is every product with float32 weights, so weights on E have a
        # distance of exactly 0 and the regularizer injects no round-off off E (SPEC §2).
        self.register_buffer("p_perp", torch.eye(h * w, dtype=torch.float64) - p_e, persistent=False)
        self.register_buffer("orbit_sizes", indicator.sum(0)[inside].to(dtype), persistent=False)

    @property
    def size(self) -> int:
        return self.h * self.w

    @property
    def orbits_in_e(self) -> int:
        """dim E per (out, in) channel pair: the number of G-orbits inside ω_G (SPEC §2)."""
        return self.basis_e.shape[1]

    def dim_e(self, out_dim: int, in_dim: int) -> int:
        """dim E of a layer with ``out_dim`` × ``in_dim`` channel pairs."""
        return out_dim * in_dim * self.orbits_in_e

    @property
    def compatible(self) -> bool:
        """Whether ω is G-invariant, i.e. Π_L and Π_{H_G} commute (SPEC §2)."""
        return bool(torch.equal(self.omega, self.omega_g))

    def project_h(self, a: torch.Tensor) -> torch.Tensor:
        return a @ self.p_h

    def project_l(self, a: torch.Tensor) -> torch.Tensor:
        return a * self.omega

    def project_e(self, a: torch.Tensor) -> torch.Tensor:
        return a @ self.p_e

    def project_perp(self, a: torch.Tensor) -> torch.Tensor:
        """Π_{E⊥}A, exact for float32 A (computed in float64): one small product, every step."""
        return a @ self.p_perp if a.dtype == torch.float64 else (a.double() @ self.p_perp).to(a.dtype)
