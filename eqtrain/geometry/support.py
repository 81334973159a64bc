"""Kernel supports ω and the admissible space L (SPEC §1).

A support is a boolean k×k mask; L is the space of kernels vanishing outside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

SUPPORT_NAMES = ("full", "cross", "skewed")


def make_support(spec: str | Sequence[Sequence[int]], kernel_size: int) -> torch.Tensor:
    """The k×k boolean mask for ``model.support``: a name or an explicit k×k 0/1 list.

    ``cross`` is the plus sign through the centre (5 points for k = 3); ``skewed`` is the cross
    plus the top-left corner — a support that is not invariant under any of eqtrain's groups,
    whose largest G-invariant subset ω_G is the cross (SPEC §5.5).
    """
    k = kernel_size
    if isinstance(spec, str):
        c = k // 2
        cross = torch.zeros(k, k, dtype=torch.bool)
        cross[c, :] = True
        cross[:, c] = True
        if spec == "full":
            return torch.ones(k, k, dtype=torch.bool)
        if spec == "cross":
            return cross
        if spec == "skewed":
            if k < 3:
                raise ValueError(f"model.support=skewed needs model.kernel_size >= 3, got {k}")
            cross[0, 0] = True
            return cross
        raise ValueError(
            f"model.support={spec!r} is not valid; use one of {', '.join(SUPPORT_NAMES)} "
            f"or an explicit {k}x{k} list of 0/1"
        )
    rows = [list(r) if isinstance(r, Sequence) and not isinstance(r, str) else None for r in spec]
    if len(rows) != k or any(r is None or len(r) != k for r in rows):
        raise ValueError(f"model.support={list(spec)!r} must be a {k}x{k} list of 0/1 (model.kernel_size={k})")
    if any(v not in (0, 1) or isinstance(v, float) and not v.is_integer() for r in rows for v in r):
        raise ValueError(f"model.support={list(spec)!r} must contain only 0 and 1")
    mask = torch.tensor(rows, dtype=torch.bool)
    if not mask.any():
        raise ValueError(f"model.support={list(spec)!r} is empty; at least one entry must be 1")
    return mask
