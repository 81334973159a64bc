"""The measurements of SPEC §7, under the names they are logged with."""

from __future__ import annotations

import torch

from .data import Data
from .group import Group
from .model import EqCNN


def distance_tags(layer_names: list[str]) -> list[str]:
    """The tags of ``distance_vector``'s entries, in order."""
    return [f"dist_to_E/{n}" for n in layer_names] + ["dist_to_E/total", "dist_to_E_rel/total"]


def distance_vector(weights: list[torch.Tensor], perps: list[torch.Tensor], batched: bool = False) -> torch.Tensor:
    """‖Π_{E⊥}A_i‖ per layer, then ‖Π_{E⊥}A‖ and ‖Π_{E⊥}A‖/‖A‖, as one tensor (SPEC §7).

    With ``batched`` the tensors carry a leading seed axis (an ensemble) and so does the result.
    Few kernels (this runs every step) and no ``.item()``: the log must not force a device sync.
    """
    n = len(perps)
    if batched:  # a seed axis in front: (N, 2n) norms, (N, 2) totals
        norms = torch.stack([t.flatten(1).norm(dim=1) for t in [*perps, *weights]], dim=1)
        totals = torch.linalg.vector_norm(norms.view(-1, 2, n), dim=2)
        return torch.cat([norms[:, :n], totals[:, :1], totals[:, :1] / totals[:, 1:]], dim=1)
    norms = torch.stack(torch._foreach_norm([*perps, *weights]))  # (2n,): ‖Π_{E⊥}A_i‖, then ‖A_i‖
    totals = torch.linalg.vector_norm(norms.view(2, n), dim=1)  # (‖Π_{E⊥}A‖, ‖A‖)
    return torch.cat([norms[:n], totals[:1], totals[:1] / totals[1:]])


def distance_to_e(names: list[str], weights: list[torch.Tensor], perps: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """``distance_vector`` as a dict keyed by its tags."""
    return dict(zip(distance_tags(names), distance_vector(weights, perps)))


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
