"""The equivariance error of every hidden layer's features (SPEC §11), for every seed at once:

    e_l = mean over images x and g ∈ G of ‖φ_l(g·x) − ρ_l(g)·φ_l(x)‖ / ‖φ_l(x)‖,

with φ_l the output of conv block l — conv, pool, activation, normalization: the maps the logits are
computed from (``nets.cnn.block_outputs``) — and ρ_l(g) its action: pixels moved, and the channels of
regular fields permuted (``FieldType.act``, SPEC §9). Norms are over one image's map of one seed.
SPEC §7's ``equiv/test_error`` is the same measure on the logits. On E every e_l is round-off; off E
the profile over l says where a network breaks the symmetry (d(A) measures weights, e_l functions).

Logged at each evaluation as ``equiv/layer/<conv>`` (``metrics.evaluate``), on the test set, at the
model's own weights, evaluated as such (``EqCNN.norm_state``: running statistics where kept), in chunks
of images as the rest of the evaluation. With a batch norm of batch statistics, each image of a chunk is
turned by its own g — image j by g_{(j + s) mod |G|}, for s = 0 … |G|−1, so every image meets every g
once. Why: such a batch norm couples the images of a batch, and per-image equivariance asks that turning
one image changes nothing for the others. Per-field statistics pass (g permutes the numbers a field's
statistics average over, image by image); per-channel ones pass only when the whole batch turns
together (SPEC §11), and this sees it. Otherwise — no batch norm, or one evaluated with running
statistics (SPEC §12) — the images are independent: the chunk turns as a whole, and the identity's
term, 0 exactly (the same forward pass twice), is not computed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..geometry.group import Group
from ..nets.cnn import EqCNN, block_outputs


def layer_tags(names: Sequence[str]) -> tuple[str, ...]:
    """The tags of the per-layer errors, for the conv layers ``names`` (the head has no e_l: its output is §7's)."""
    return tuple(f"equiv/layer/{name}" for name in names)


@torch.no_grad()
def layer_errors(
    model: EqCNN, x: torch.Tensor, group: Group, chunk: int, weights: Sequence[torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """{"equiv/layer/<conv>": e_l of every seed, (N,) float64} over the images x (B, C, H, W), ``chunk`` at a time.

    ``weights``: the A to measure (default: the model's own).
    """
    arch = model.arch
    weights = model.weights() if weights is None else weights
    biases = list(model.biases) if arch.bias else None
    norm = model.norm_state(train=False)  # evaluated: running statistics where kept, never updated
    n = weights[0].shape[0]
    perms = channel_perms(arch, group, x.device)
    sums = torch.zeros(len(perms), n, dtype=torch.float64, device=x.device)
    coupled = int(arch.couples_images)  # 1: the images of a batch share statistics, each gets its own g
    for i in range(0, len(x), chunk):
        batch = x[i : i + chunk]
        base = reference_maps(block_outputs(arch, weights, batch, biases, norm), n)
        for shift in range(0 if coupled else 1, group.order):
            elements = (torch.arange(len(batch)) * coupled + shift) % group.order  # image j turned by g_j
            moved = block_outputs(arch, weights, _act_each(group, batch, elements), biases, norm)
            sums += error_sums(group, base, moved, elements, perms)
    return dict(zip(layer_tags(model.layer_names[:-1]), sums / (len(x) * group.order)))


def channel_perms(arch, group: Group, device) -> list[torch.Tensor | None]:
    """ρ_l(g) on the channels of every hidden layer: (|G|, C_l) gathers (SPEC §9), or None where no g moves a
    channel (trivial fields: the gather would only copy the map)."""
    perms = [t.permutations().to(device) for t in arch.field_types(group)[1:-1]]
    return [None if bool((p == torch.arange(p.shape[1], device=device)).all()) else p for p in perms]


def reference_maps(maps: Iterable[torch.Tensor], n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """φ_l(x) of every layer, (B, N·C, H, W) seed-stacked, as (B, N, C, H, W) with its norms ‖φ_l(x)‖ (B, N)
    (kept above 0): what ``error_sums`` compares every g's maps with, its norms computed once for all g."""
    out = []
    for f in maps:
        f = f.unflatten(1, (n, -1))
        out.append((f, _norms(f).clamp_min(torch.finfo(f.dtype).tiny)))
    return out


def error_sums(
    group: Group,
    base: Sequence[tuple[torch.Tensor, torch.Tensor]],
    moved,
    elements: torch.Tensor,
    perms: Sequence[torch.Tensor | None],
) -> torch.Tensor:
    """(layers, N) float64: Σ over a chunk's images j of ‖φ_l(g_j·x_j) − ρ_l(g_j)·φ_l(x_j)‖ / ‖φ_l(x_j)‖.

    ``base``: φ_l(x) and its norms per layer (``reference_maps``); ``moved``: φ_l(g·x) as (B, N·C, H, W) per layer.
    """
    rows = []
    for layer, ((f, norms), fg) in enumerate(zip(base, moved)):
        expected = _act_each(group, f, elements, perms[layer])  # ρ_l(g_j)·φ_l(x_j)
        rows.append((_norms(fg.unflatten(1, (f.shape[1], -1)) - expected) / norms).double().sum(0))
    return torch.stack(rows)


def act_on_maps(group: Group, t: torch.Tensor, g: int, perms: torch.Tensor | None = None) -> torch.Tensor:
    """ρ_l(g) on maps t (..., C, H, W): their pixels moved and, with ``perms`` (|G|, C) (``channel_perms``), their
    channels permuted."""
    moved = group.act(t, g)
    return moved if perms is None else moved[..., perms[g], :, :]


def _act_each(group: Group, t: torch.Tensor, elements: torch.Tensor, perms: torch.Tensor | None = None) -> torch.Tensor:
    """Image j of t (B, ..., C, H, W) acted on by the group element ``elements[j]`` (``act_on_maps``)."""
    values = elements.unique().tolist()
    if len(values) == 1:  # one g for all: no gather
        return act_on_maps(group, t, values[0], perms)
    out = torch.empty_like(t)
    for g in values:
        index = (elements == g).nonzero().squeeze(1).to(t.device)
        out[index] = act_on_maps(group, t[index], g, perms)
    return out


def _norms(f: torch.Tensor) -> torch.Tensor:
    """‖·‖ of every image's map of every seed: (B, N, ...) → (B, N)."""
    return torch.linalg.vector_norm(f.flatten(2), dim=-1)
