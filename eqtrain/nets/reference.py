"""The authors' initial law, ``init.scheme=reference`` (docs/design.md, "The reference initial law").

The authors' code (Nordenfors & Flinth 2025) holds an equivariant layer as parameter tensors of
orbit values and applies ``nn.init.kaiming_uniform_(a=√5)`` to each tensor: bound 1/√fan_in,
where fan_in = size(1)·prod(size(2:)) counts the entries of *that tensor* per output row, not
the entries of the kernel. With C4, a full k×k kernel (k odd) and an m×m map before the head
(m odd):

- each conv orbit is one (C_out, C_in) tensor: U(±1/√C_in);
- the head's (m²−1)/4 four-element orbits are one (classes, C, (m+1)/2, (m−1)/2) tensor (a
  fundamental domain of C4 on the map minus its centre): U(±1/√(C·(m²−1)/4)), i.e. 1/√192 for
  the paper's 16 channels on 7×7;
- the head's centre is one (classes, C) tensor: U(±1/√C).

The perturbation is that of ``perturbed_equivariant``: Π_{E⊥}Π_L ξ, ξ ~ N(0, σ²) i.i.d., drawn
in the same order from the same generator, so for one seed the two schemes share ξ exactly and
differ only in the scale of each orbit value.
"""

from __future__ import annotations

import torch

from .cnn import EqCNN

DOMAIN = (
    "group=c4, scalar channels (model.fibers=trivial), model.support=full, an odd model.kernel_size and an odd "
    "square map before the head (e.g. 28x28 images after two 2x pools: 7x7)"
)


def reference_problem(model: EqCNN) -> str | None:
    """Why the authors' code defines no initial law for this network (None when it does)."""
    if model.group.name != "c4":
        return f"group={model.group.name}"
    for name, space in zip(model.space.names, model.space):
        h, w = space.h, space.w
        if getattr(space, "joint", False):  # G permutes its channels (SPEC §9)
            return f"{name} has regular fields (model.fibers=regular)"
        if name == "head" and not (h == w and h % 2):
            return f"the head reads a {h}x{w} map"
        if name != "head" and not (h == w and h % 2):
            return f"{name} has a {h}x{w} kernel"
        if name != "head" and not bool(space.omega.all()):
            return f"{name}'s support is not full"
        # Scalar channels: every orbit has 4 positions but the centre (not, e.g., a regular field's).
        sizes = sorted(int(n) for n in space.orbit_sizes.tolist())
        if sizes != [1] + [4] * ((h * w - 1) // 4):
            return f"{name} is not a layer of scalar channels"
    return None


def orbit_bounds(model: EqCNN) -> list[torch.Tensor]:
    """Per layer, the bound b of U(±b) of each orbit value, in the order of the columns of ``space.basis_e``."""
    bounds = []
    for name, space, m in zip(model.space.names, model.space, model.maps):
        c_in = m.channels[1]
        sizes = space.orbit_sizes.cpu().double()
        if name == "head":  # centre: a (classes, C) tensor; the rest: one (classes, C, (m+1)/2, (m-1)/2) tensor
            block = c_in * (space.size - 1) // 4
            bounds.append(torch.where(sizes == 1, torch.full_like(sizes, c_in**-0.5), block**-0.5))
        else:  # every orbit: its own (C_out, C_in) tensor
            bounds.append(torch.full_like(sizes, c_in**-0.5))
    return bounds


def reference_weights(model: EqCNN, sigma: float, seed: int) -> list[torch.Tensor]:
    """A₀ under the authors' law, as float64 CPU tensors (out, in, s); ValueError outside its domain."""
    problem = reference_problem(model)
    if problem is not None:
        raise ValueError(
            f"init.scheme='reference' is not valid for this run ({problem}): the authors' initial law is "
            f"defined only for {DOMAIN}; use init.scheme=perturbed_equivariant or init.scheme=standard"
        )
    generator = torch.Generator().manual_seed(seed)
    weights = []
    for space, m, bounds in zip(model.space, model.maps, orbit_bounds(model)):
        out_dim, in_dim = m.channels
        omega = space.omega.cpu().double()
        basis = space.basis_e.cpu().double()  # (s, n) orthonormal orbit indicators
        # The same draws, in the same order, as perturbed_equivariant: only the bounds differ.
        values = (
            2 * torch.rand(out_dim, in_dim, basis.shape[1], generator=generator, dtype=torch.float64) - 1
        ) * bounds
        a_eq = values @ (basis > 0).double().T  # each orbit's entries share one value
        xi = torch.randn(out_dim, in_dim, space.size, generator=generator, dtype=torch.float64) * sigma * omega
        weights.append(a_eq + xi - xi @ (basis @ basis.T))
    return weights
