"""The measurements of SPEC §7 and §10, under the names they are logged with, for every seed at once."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.datasets import Data
from ..geometry.group import Group
from ..geometry.space import distance_tags
from ..nets.cnn import EqCNN, logits_at

# What a run reports at the end, in the hparams (TensorBoard's HParams tab) and per evaluation.
HPARAM_METRICS = (
    "acc/test",
    "acc/test_orbit",
    "acc/test_projected",
    "acc/test_orbit_projected",
    "dist_to_E/total",
    "dist_to_E_rel/total",
    "equiv/test_error",
)


def step_tags(layer_names: Sequence[str]) -> tuple[str, ...]:
    """The per-step scalars, in ``step_rows`` order."""
    return ("loss/data", "loss/reg", "loss/total", "gamma/t", *distance_tags(layer_names))


def step_rows(loss: torch.Tensor, dist: torch.Tensor, gamma: torch.Tensor, data_scale: float) -> torch.Tensor:
    """Per seed (and step): R, γΓ = γ/2·d², data_scale·R + γΓ, γ_t, then the distances (``Distances.values``).

    loss (...), dist (..., layers + 2) and gamma (...) share their leading axes; the rows are (..., tags).
    """
    data = loss.to(dist.dtype)
    gamma = gamma.to(dist.dtype).expand_as(data)
    reg = dist[..., -2].square() * (0.5 * gamma)
    total = data * data_scale + reg if data_scale != 1 else data + reg
    return torch.cat([torch.stack([data, reg, total, gamma], dim=-1), dist], dim=-1)


@torch.no_grad()
def evaluate(model: EqCNN, data: Data, group: Group, chunk: int = 2048) -> list[dict[str, float]]:
    """Per seed: accuracies and equivariance errors of the model (SPEC §7), and of its projection Π_E(A).

    The projected model (SPEC §10) is the exactly equivariant network nearest to the weights:
    its accuracy is what the run would give if snapped onto E.
    """
    weights = model.weights()
    biases = list(model.biases) if model.arch.bias else None
    own = _accuracies(model.arch, weights, biases, data, group, chunk, full=True)
    projected = _accuracies(model.arch, model.space.project_e(weights), biases, data, group, chunk, full=False)
    out = {**own, "acc/test_projected": projected["acc/test"], "acc/test_orbit_projected": projected["acc/test_orbit"]}
    values = torch.stack([v.double() for v in out.values()], dim=1).tolist()  # one host read for every seed
    return [dict(zip(out, row)) for row in values]


def _accuracies(arch, weights, biases, data: Data, group: Group, chunk: int, full: bool) -> dict[str, torch.Tensor]:
    def logits(x: torch.Tensor) -> torch.Tensor:  # (N, B, classes)
        return torch.cat([logits_at(arch, weights, x[i : i + chunk], biases) for i in range(0, len(x), chunk)], 1)

    out = {}
    if full:
        out["acc/train"] = (logits(data.x_train).argmax(-1) == data.y_train).double().mean(1)
    base = logits(data.x_test)  # (N, B, classes)
    orbit = torch.stack([logits(group.act(data.x_test, i)) for i in range(group.order)])  # (|G|, N, B, classes)
    pred = orbit.argmax(-1)  # (|G|, N, B); pred[0] is the identity's
    out["acc/test"] = (pred[0] == data.y_test).double().mean(1)
    out["acc/test_orbit"] = (pred == data.y_test).double().mean((0, 2))
    if full:
        err = (orbit - base).norm(dim=-1) / base.norm(dim=-1).clamp_min(torch.finfo(base.dtype).tiny)
        out["equiv/test_error"] = err.mean((0, 2))
        out["equiv/test_consistency"] = (pred == pred[0]).all(0).double().mean(1)
    return out
