"""How a layer's weight A is parametrized (SPEC §3).

Every learnable linear map is ``A = θ @ B``: coordinates θ of shape (N, out, in, p) — N seeds
of an ensemble, N = 1 for a single run — in a fixed basis B of shape (p, s) of the space the
layer may move in. One mechanism covers the three cases:

- ``orthogonal``: B selects the kernel entries on the support ω (orthonormal rows; the identity,
  stored as ``None``, when ω is full). SGD on θ is SGD on A restricted to L.
- ``basis``: B is a fixed, seeded, random non-orthogonal basis of L. It changes the geometry of
  the gradient flow, which is the point of having it.
- equivariant (``constrain``): B is the orthonormal basis of E (orbit indicators of unit norm),
  so θ has dim E entries and SGD on θ is the projected flow Ȧ = −Π_E ∇R(A).

When G permutes a layer's channels (regular fields, SPEC §9), the orbits of E run across
channels, so E's basis does not factor as (out, in) × (a basis over s). It is then kept as
an ``OrbitBasis``: θ holds one number per orbit (shape (N, dim E)), A = θ[orbit(j)]/√|orbit| is
one gather, and Bᵀ (the pull-back, and the least-squares fit onto E) is one scatter-add. The
free parametrizations of L are unchanged: L does not depend on how G acts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..schema import COORDINATES
from .layer_space import LayerSpace

PARAMETRIZATIONS = ("orthogonal", "basis")
# COORDINATES: those of an equivariant model (SPEC §12.3), the orthonormal basis of E (orbit indicators
# over √|orbit|, §3), or the orbit values themselves (tied weights: one parameter per orbit, A[j] =
# θ[orbit(j)]). Linear optimizers match orbit-augmented training in the first, Adam in the second.


@dataclass(frozen=True)
class OrbitBasis:
    """E's orthonormal basis as orbit labels: A[j] = θ[labels[j]]·scale[j] over the flat (out·in·s) index.

    ``scale`` is 1/√|orbit| on ω_G and 0 elsewhere (there A is 0) for the orthonormal basis, 1 on ω_G
    for tied weights; ``fit`` weighs the entries of the least-squares fit θ = Σ_{j ∈ orbit} fit[j]·A[j]
    (1/√|orbit|, or 1/|orbit|: the orbit's mean); ``dim`` is the number of orbits.
    """

    labels: torch.Tensor
    scale: torch.Tensor
    dim: int
    fit: torch.Tensor


def make_basis(
    space: LayerSpace,
    parametrization: str,
    constrain: bool,
    generator: torch.Generator,
    coordinates: str = "orthonormal",
) -> torch.Tensor | OrbitBasis | None:
    """The basis B (p, s) of the layer's parameter space, None for the identity, or E's ``OrbitBasis``.

    ``coordinates`` (one of ``COORDINATES``) only matters with ``constrain``: E's orthonormal basis, or
    its orbit indicators unscaled (tied weights, SPEC §12.3).
    """
    dtype = space.orbit_sizes.dtype
    if coordinates not in COORDINATES:
        raise ValueError(
            f"model.equivariant_coordinates={coordinates!r} is not valid; use auto, {', '.join(COORDINATES)}"
        )
    tied = coordinates == "tied"
    if constrain and space.joint:
        scale = space.entry_scale.clone()  # 1/√|orbit| on ω_G, 0 off it
        if tied:  # A[j] = θ[orbit(j)]; the least-squares fit is the orbit's mean
            return OrbitBasis(space.orbit_labels.clone(), (scale > 0).to(dtype), len(space.orbit_sizes), scale * scale)
        return OrbitBasis(space.orbit_labels.clone(), scale, len(space.orbit_sizes), scale)
    if constrain:
        basis = space.basis_e.T.clone()  # rows: orbit indicators / √|orbit|
        return (basis > 0).to(dtype) if tied else basis
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"model.parametrization={parametrization!r} is not valid; use one of {', '.join(PARAMETRIZATIONS)}"
        )
    select = torch.eye(space.size, dtype=torch.float64)[space.omega.cpu()]  # (|ω|, s)
    if parametrization == "orthogonal":
        return None if bool(space.omega.all()) else select.to(dtype)
    # A well-conditioned but clearly non-orthogonal change of basis: lower-triangular with
    # diagonal in [0.5, 1.5] (so always invertible) and off-diagonal entries of size ~0.5/√p.
    p = select.shape[0]
    mix = torch.diag(0.5 + torch.rand(p, generator=generator, dtype=torch.float64))
    mix += torch.tril(torch.randn(p, p, generator=generator, dtype=torch.float64), -1) * (0.5 / p**0.5)
    return (mix @ select).to(dtype)


class ParametrizedMap(nn.Module):
    """N learnable linear maps (one per seed) whose weights are θ @ B (B = None means the identity).

    θ is (N, out, in, p), or (N, dim E) for an ``OrbitBasis``.
    """

    def __init__(
        self,
        n_seeds: int,
        out_dim: int,
        in_dim: int,
        size: int,
        basis: torch.Tensor | OrbitBasis | None,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        self.out_dim, self.in_dim, self.size = out_dim, in_dim, size
        orbits = basis if isinstance(basis, OrbitBasis) else None
        basis = None if orbits is not None else basis
        if orbits is not None:
            self.theta = nn.Parameter(torch.zeros(n_seeds, orbits.dim, dtype=dtype))
        else:
            p = size if basis is None else basis.shape[0]
            self.theta = nn.Parameter(torch.zeros(n_seeds, out_dim, in_dim, p, dtype=dtype))
        self.register_buffer("basis", basis, persistent=False)
        pinv = None if basis is None else torch.linalg.pinv(basis.double()).to(basis.dtype)
        self.register_buffer("basis_pinv", pinv, persistent=False)
        self.register_buffer("orbit_labels", None if orbits is None else orbits.labels, persistent=False)
        self.register_buffer("orbit_scale", None if orbits is None else orbits.scale.to(dtype), persistent=False)
        self.register_buffer("orbit_fit", None if orbits is None else orbits.fit.to(dtype), persistent=False)

    @property
    def channels(self) -> tuple[int, int]:
        """(out, in)."""
        return self.out_dim, self.in_dim

    def weight(self) -> torch.Tensor:
        """A of shape (N, out, in, s)."""
        if self.orbit_labels is not None:  # one gather: A[j] = θ[orbit(j)]/√|orbit|
            a = torch.index_select(self.theta, 1, self.orbit_labels) * self.orbit_scale  # backward: index_add
            return a.view(-1, self.out_dim, self.in_dim, self.size)
        return self.theta if self.basis is None else self.theta @ self.basis

    def _orbit_sums(self, a: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Bᵀ A for the orbit basis: Σ_{j ∈ orbit} A[j]·scale[j] (one scatter-add; ``weight`` in place of
        the scale if given); A is (..., out, in, s)."""
        flat = a.flatten(-3) * (self.orbit_scale if weight is None else weight)
        return flat.new_zeros(*flat.shape[:-1], self.theta.shape[-1]).index_add_(-1, self.orbit_labels, flat)

    @torch.no_grad()
    def set_weight(self, a: torch.Tensor) -> None:
        """θ with θ @ B = A (least squares: exact when A lies in the span of B).

        A is (N, out, in, s), or (out, in, s) to give every seed the same weights.
        """
        a = a.to(self.theta)
        if self.orbit_labels is not None:  # orthonormal: the fit is Bᵀ A; tied: each orbit's mean
            self.theta.copy_(self._orbit_sums(a, self.orbit_fit))
            return
        self.theta.copy_(a if self.basis is None else a @ self.basis_pinv)

    def pull_back(self, grad_a: torch.Tensor) -> torch.Tensor:
        """The gradient with respect to θ of a function whose gradient in A is ``grad_a``."""
        if self.orbit_labels is not None:
            return self._orbit_sums(grad_a)
        return grad_a if self.basis is None else grad_a @ self.basis.T
