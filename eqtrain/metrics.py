"""The measurements of SPEC §7, under the names they are logged with."""

from __future__ import annotations

import torch

from .data import Data
from .group import Group
from .model import EqCNN


def distance_to_e(names: list[str], weights: list[torch.Tensor], perps: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """``dist_to_E/<layer>``, ``dist_to_E/total`` and ``dist_to_E_rel/total`` as 0-d tensors.

    Returned as tensors (no ``.item()``) so the per-step log does not force a device sync.
    """
    sq = torch.stack([p.pow(2).sum() for p in perps])
    norm_sq = torch.stack([a.pow(2).sum() for a in weights]).sum()
    dists = sq.sqrt()
    out = {f"dist_to_E/{n}": d for n, d in zip(names, dists)}
    total = sq.sum().sqrt()
    out["dist_to_E/total"] = total
    out["dist_to_E_rel/total"] = total / norm_sq.sqrt()
    return out


@torch.no_grad()
def evaluate(model: EqCNN, data: Data, group: Group, chunk: int = 2048) -> dict[str, float]:
    """Accuracies and equivariance errors on the train and test sets (one pass each)."""
    was_training = model.training
    model.eval()

    def logits(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])

    out = {"acc/train": (logits(data.x_train).argmax(1) == data.y_train).double().mean().item()}
    base = logits(data.x_test)  # (N, classes)
    orbit = torch.stack([logits(group.act(data.x_test, i)) for i in range(group.order)])  # (|G|, N, classes)
    pred = orbit.argmax(-1)  # (|G|, N); pred[0] is the identity's
    out["acc/test"] = (pred[0] == data.y_test).double().mean().item()
    out["acc/test_orbit"] = (pred == data.y_test).double().mean().item()
    err = (orbit - base).norm(dim=-1) / base.norm(dim=-1).clamp_min(torch.finfo(base.dtype).tiny)
    out["equiv/test_error"] = err.mean().item()
    out["equiv/test_consistency"] = (pred == pred[0]).all(0).double().mean().item()
    model.train(was_training)
    return out
