"""Initial weights A₀ (SPEC §8), identical for every mode given the seed and the model config.

Every scheme draws in float64 on the CPU from its own generator, so A₀ depends on nothing but
``seed`` and the architecture — not on the mode, the device or the dtype. The equivariant mode
then starts at Π_E(A₀) (``EqCNN.set_weights`` projects onto the model's space). An ensemble of
seeds s₀, s₀+1, … starts each seed from exactly the A₀ its own run would have.
"""

from __future__ import annotations

import torch

from .cnn import EqCNN
from .reference import reference_weights

INIT_SCHEMES = ("perturbed_equivariant", "reference", "standard")


def initial_weights(model: EqCNN, scheme: str, sigma: float, seed: int) -> list[torch.Tensor]:
    """A₀ as a list of float64 CPU tensors of shape (out, in, s), one per layer.

    - ``standard``: each kernel Kaiming-uniform like ``nn.Conv2d``'s default (bound 1/√fan_in),
      restricted to ω.
    - ``perturbed_equivariant``: an equivariant network whose orbit values are Kaiming-uniform
      (every weight entry has the same law as in ``standard``, tied along G-orbits), plus
      Π_{E⊥}Π_L ξ with ξ ~ N(0, σ²) i.i.d. — a perturbation in L, orthogonal to E.
    - ``reference``: the authors' law (``nets/reference.py``): the same perturbation, orbit values
      Kaiming-uniform over the authors' orbit tensors. Defined for the paper's CNN under C4 only.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init.scheme={scheme!r} is not valid; use one of {', '.join(INIT_SCHEMES)}")
    if not sigma >= 0:
        raise ValueError(f"init.sigma={sigma!r} must be a finite number >= 0")
    if scheme == "reference":
        return reference_weights(model, sigma, seed)
    generator = torch.Generator().manual_seed(seed)
    weights = []
    for space, m in zip(model.space, model.maps):
        out_dim, in_dim = m.channels
        bound = 1.0 / (in_dim * space.size) ** 0.5
        omega = space.omega.cpu().double()
        if scheme == "standard":
            a = (2 * torch.rand(out_dim, in_dim, space.size, generator=generator, dtype=torch.float64) - 1) * bound
            weights.append(a * omega)
            continue
        shape = space.orbit_shape(out_dim, in_dim)  # one value per orbit of E (joint orbits for regular fields)
        values = (2 * torch.rand(*shape, generator=generator, dtype=torch.float64) - 1) * bound
        a_eq = space.tie(values)  # each orbit's entries share one value
        xi = torch.randn(out_dim, in_dim, space.size, generator=generator, dtype=torch.float64) * sigma * omega
        weights.append(a_eq + xi - space.e_component(xi))
    return weights


def initial_weights_of_seeds(model: EqCNN, scheme: str, sigma: float, seeds: list[int]) -> list[torch.Tensor]:
    """A₀ of every seed, stacked: one float64 CPU tensor (N, out, in, s) per layer."""
    per_seed = [initial_weights(model, scheme, sigma, s) for s in seeds]
    return [torch.stack(layer) for layer in zip(*per_seed)]
