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
"""

from __future__ import annotations

import torch
from torch import nn

from .projection import LayerSpace

PARAMETRIZATIONS = ("orthogonal", "basis")


def make_basis(
    space: LayerSpace, parametrization: str, constrain: bool, generator: torch.Generator
) -> torch.Tensor | None:
    """The basis B (p, s) of the layer's parameter space, or None for the identity."""
    dtype = space.p_e.dtype
    if constrain:
        return space.basis_e.T.clone()
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
    """N learnable linear maps (one per seed) whose weights are θ @ B (B = None means the identity)."""

    def __init__(
        self, seeds: int, out_dim: int, in_dim: int, size: int, basis: torch.Tensor | None, dtype: torch.dtype
    ) -> None:
        super().__init__()
        p = size if basis is None else basis.shape[0]
        self.theta = nn.Parameter(torch.zeros(seeds, out_dim, in_dim, p, dtype=dtype))
        self.register_buffer("basis", basis, persistent=False)
        pinv = None if basis is None else torch.linalg.pinv(basis.double()).to(basis.dtype)
        self.register_buffer("basis_pinv", pinv, persistent=False)

    @property
    def channels(self) -> tuple[int, int]:
        """(out, in)."""
        return self.theta.shape[1], self.theta.shape[2]

    def weight(self) -> torch.Tensor:
        """A of shape (N, out, in, s)."""
        return self.theta if self.basis is None else self.theta @ self.basis

    @torch.no_grad()
    def set_weight(self, a: torch.Tensor) -> None:
        """θ with θ @ B = A (least squares: exact when A lies in the span of B).

        A is (N, out, in, s), or (out, in, s) to give every seed the same weights.
        """
        a = a.to(self.theta)
        self.theta.copy_(a if self.basis is None else a @ self.basis_pinv)

    def pull_back(self, grad_a: torch.Tensor) -> torch.Tensor:
        """The gradient with respect to θ of a function whose gradient in A is ``grad_a``."""
        return grad_a if self.basis is None else grad_a @ self.basis.T
