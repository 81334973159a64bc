"""Exact projections onto H_G, L, E and E⊥ for one layer, in weight space (SPEC §2, §9).

A layer's weight is stored as a tensor of shape (..., out, in, s): s = h·w spatial positions
(a k×k kernel, or the (h, w) grid the linear head reads per channel). G acts on it by one joint
permutation of the index triples (out channel, in channel, position): pixels move by the
group's action on the grid, channels by the field types' permutations (SPEC §9). Everything
below comes from the orbits of that action: Π_{H_G} is the group average, Π_E = ω_G ⊙ Π_{H_G},
and the orthonormal basis of E is the orbit indicators scaled to unit norm.

Two ways of computing the same objects, chosen by the action, not by the layer:

- channels fixed by G (trivial fields: SPEC §1's scalar CNN): the joint orbits are
  (o, i, pixel orbit), so every projection is a right-multiplication by a cached s×s matrix on
  the spatial axis — one small matmul;
- channels permuted (regular fields): the orbits mix channels and positions, and an
  (out·in·s)² matrix would be far too large. Each entry's orbit label is kept instead: an orbit
  average is one scatter-add of the entries into their orbits and one gather back (measured
  about as fast as the s×s product on the paper's layer sizes, and 3–6× faster than averaging
  |G| gathered copies), and the basis of E is the same table of labels.
"""

from __future__ import annotations

import torch
from torch import nn

from .fields import FieldType
from .group import Group


class LayerSpace(nn.Module):
    """The subspaces L, H_G and E = H_G ∩ L of one layer's weights.

    ``mask`` is the support ω over the spatial grid (all True for the linear head).
    ``out_type`` and ``in_type`` are the field types of the layer's output and input channels;
    None means trivial fields (of any number). The tensors are computed in float64 and stored
    in ``dtype`` (build in float64 directly rather than casting later, so float64 runs see
    float64-exact projections).
    """

    def __init__(
        self,
        group: Group,
        h: int,
        w: int,
        mask: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
        out_type: FieldType | None = None,
        in_type: FieldType | None = None,
    ) -> None:
        super().__init__()
        mask = torch.ones(h, w, dtype=torch.bool) if mask is None else mask.bool()
        if mask.shape != (h, w):
            raise ValueError(f"support of shape {tuple(mask.shape)} does not match the {h}x{w} grid")
        perms = group.permutations(h, w)  # (|G|, s)
        omega = mask.reshape(-1)
        # ω_G = ∩_g g·ω, with (g·ω)[j] = ω[perm[g, j]] (SPEC §2).
        omega_g = omega[perms].all(dim=0)
        self.group, self.h, self.w = group, h, w
        self.out_type, self.in_type = out_type, in_type
        self.register_buffer("omega", omega, persistent=False)
        self.register_buffer("omega_g", omega_g, persistent=False)
        if any(t is not None and t.permutes for t in (out_type, in_type)):
            self._joint_orbits(perms, omega_g, out_type, in_type, dtype)
            return
        self.joint = False
        orbit = perms.min(dim=0).values  # orbit label of every position
        labels, position_orbit = orbit.unique(return_inverse=True)
        indicator = (orbit[:, None] == labels[None, :]).double()  # (s, n_orbits)
        # Π_H: average over each orbit (the group average of SPEC §2), as an s×s matrix.
        p_h = indicator @ (indicator / indicator.sum(0)).T
        inside = omega_g[labels]  # orbits contained in ω_G (ω_G is a union of orbits)
        basis = indicator[:, inside] / indicator[:, inside].sum(0).sqrt()  # orthonormal basis of E
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
        # Each position's orbit (0 .. n_orbits-1) and Π_E's weight per orbit, for ``entry_orbits``.
        self.register_buffer("position_orbit", position_orbit, persistent=False)
        self.register_buffer("position_mean_e", inside / indicator.sum(0), persistent=False)  # float64

    def _joint_orbits(
        self, perms: torch.Tensor, omega_g: torch.Tensor, out_type: FieldType, in_type: FieldType, dtype: torch.dtype
    ) -> None:
        """The orbits of G on index triples (o, i, p), for channels that G permutes (SPEC §9)."""
        if out_type is None or in_type is None:
            raise ValueError("a layer whose channels G permutes needs both field types (out and in)")
        n_out, n_in, s = out_type.channels, in_type.channels, perms.shape[1]
        # (g·A)[o, i, p] = A[σ_out[g, o], σ_in[g, i], P[g, p]]: one permutation of the flat index.
        joint = (
            (out_type.permutations()[:, :, None, None] * n_in + in_type.permutations()[:, None, :, None]) * s
            + perms[:, None, None, :]
        ).reshape(len(perms), n_out * n_in * s)
        first, orbit = joint.min(dim=0).values.unique(return_inverse=True)  # each entry's orbit, 0 .. n_orbits-1
        sizes = torch.bincount(orbit).double()
        inside = omega_g[first % s]  # orbits inside ω_G (its positions form a G-invariant set)
        self.joint = True
        self.register_buffer("orbit_of", orbit, persistent=False)  # (out·in·s,)
        # Π_H A = the mean of each orbit, put back on its entries; Π_E the same on ω_G, 0 off it.
        self.register_buffer("orbit_mean_h", (1 / sizes).to(dtype), persistent=False)
        self.register_buffer("orbit_mean_e", (inside / sizes).to(dtype), persistent=False)
        self.register_buffer("orbit_mean_e64", inside / sizes, persistent=False)  # float64, for ``entry_orbits``
        # E's orbit basis: orbits inside ω_G numbered 0 .. dim E − 1 in order; an entry outside gets weight 0.
        rank = torch.cumsum(inside.long(), 0) - 1
        self.register_buffer("orbit_labels", rank[orbit].clamp_min(0), persistent=False)  # (out·in·s,)
        scale = torch.where(inside[orbit], sizes[orbit].rsqrt(), 0.0)  # 1/√|orbit| on ω_G, else 0
        self.register_buffer("entry_scale", scale.to(dtype), persistent=False)
        self.register_buffer("orbit_sizes", sizes[inside].to(dtype), persistent=False)
        self.basis_e = None  # E's basis is the orbit labels: see ``OrbitBasis``
        self._dim_e = int(inside.sum())

    def entry_orbits(self, out_dim: int, in_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every entry's orbit and Π_E's weight per orbit, for a layer of ``out_dim`` × ``in_dim`` channels.

        Returns (labels, mean_e): labels (out·in·s,) numbers the orbits of the flat index 0 .. n − 1;
        mean_e (n,), float64, is 1/|orbit| for the orbits inside ω_G and 0 for the others, so that
        Π_E A is each orbit's sum times mean_e, put back on its entries (SPEC §2, §9).
        """
        if self.joint:
            self.dim_e(out_dim, in_dim)  # checks the channel counts
            return self.orbit_of, self.orbit_mean_e64
        pairs = torch.arange(out_dim * in_dim, device=self.position_orbit.device)
        n = len(self.position_mean_e)
        return (pairs[:, None] * n + self.position_orbit).reshape(-1), self.position_mean_e.repeat(out_dim * in_dim)

    @property
    def size(self) -> int:
        return self.h * self.w

    @property
    def orbits_in_e(self) -> int:
        """dim E per (out, in) channel pair: the number of G-orbits inside ω_G (SPEC §2). Trivial fields only."""
        if self.joint:
            raise ValueError("dim E of a layer whose channels G permutes is not per channel pair: use dim_e")
        return self.basis_e.shape[1]

    def dim_e(self, out_dim: int, in_dim: int) -> int:
        """dim E of a layer with ``out_dim`` × ``in_dim`` channels: the orbits of triples inside ω_G (SPEC §9)."""
        if not self.joint:
            return out_dim * in_dim * self.orbits_in_e
        if (out_dim, in_dim) != (self.out_type.channels, self.in_type.channels):
            raise ValueError(
                f"this layer space has {self.out_type.channels}x{self.in_type.channels} channels, not {out_dim}x{in_dim}"
            )
        return self._dim_e

    def dim_l(self, out_dim: int, in_dim: int) -> int:
        return out_dim * in_dim * int(self.omega.sum())

    @property
    def compatible(self) -> bool:
        """Whether ω is G-invariant, i.e. Π_L and Π_{H_G} commute (SPEC §2)."""
        return bool(torch.equal(self.omega, self.omega_g))

    def rebuilt(self, dtype: torch.dtype) -> LayerSpace:
        """The same space with its tensors computed afresh in ``dtype`` (on the CPU)."""
        mask = self.omega.reshape(self.h, self.w).cpu()
        return LayerSpace(self.group, self.h, self.w, mask, dtype, self.out_type, self.in_type)

    def _orbit_average(self, a: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Each entry of A (..., out, in, s) replaced by its orbit's sum times ``weights[orbit]``."""
        flat, orbit = a.flatten(-3), self.orbit_of
        sums = flat.new_zeros(*flat.shape[:-1], len(weights)).index_add_(-1, orbit, flat).mul_(weights)
        return sums.gather(-1, orbit.expand(flat.shape)).view(a.shape)

    def project_h(self, a: torch.Tensor) -> torch.Tensor:
        """Π_{H_G}: the group average (1/|G|) Σ_g g·A, i.e. the mean over each orbit."""
        return a @ self.p_h if not self.joint else self._orbit_average(a, self.orbit_mean_h)

    def project_l(self, a: torch.Tensor) -> torch.Tensor:
        return a * self.omega

    def project_e(self, a: torch.Tensor) -> torch.Tensor:
        """Π_E = ω_G ⊙ Π_{H_G} (SPEC §2)."""
        return a @ self.p_e if not self.joint else self._orbit_average(a, self.orbit_mean_e)

    def project_perp(self, a: torch.Tensor) -> torch.Tensor:
        """Π_{E⊥} = I − Π_E, exact for float32 A (computed in float64): one small product (or one
        scatter-add and gather). The training step does all layers at once (``NetworkSpace``)."""
        wide = a if a.dtype == torch.float64 else a.double()
        perp = wide @ self.p_perp if not self.joint else wide - self._orbit_average(wide, self.orbit_mean_e)
        return perp.to(a.dtype)

    # -- E's orthonormal orbit basis, for the initial law (nets.init) ------------------------------
    def orbit_shape(self, out_dim: int, in_dim: int) -> tuple[int, ...]:
        """The shape of one value per orbit of E (the coordinates in E's orbit basis)."""
        return (out_dim, in_dim, self.orbits_in_e) if not self.joint else (self.dim_e(out_dim, in_dim),)

    def tie(self, values: torch.Tensor) -> torch.Tensor:
        """The weight (out, in, s), float64 on the CPU, whose entries on each orbit of E equal that orbit's value."""
        if not self.joint:
            return values @ (self.basis_e.cpu().double() > 0).double().T
        inside = self.entry_scale.cpu() > 0
        a = values[self.orbit_labels.cpu()] * inside
        return a.view(self.out_type.channels, self.in_type.channels, self.size)

    def e_component(self, xi: torch.Tensor) -> torch.Tensor:
        """Π_E ξ for a float64 CPU tensor ξ (out, in, s)."""
        if not self.joint:
            basis = self.basis_e.cpu().double()
            return xi @ (basis @ basis.T)
        return self.rebuilt(torch.float64).project_e(xi)
