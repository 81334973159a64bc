"""The measurements of SPEC §7, §10 and §11, under the names they are logged with, for every seed at once."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.datasets import Data
from ..geometry.group import Group
from ..geometry.network_space import distance_tags
from ..nets.cnn import EqCNN, block_outputs, head_at, logits_at
from ..nets.layers import NormState
from .layer_equivariance import channel_perms, error_sums, layer_errors, layer_tags, reference_maps

# What a run reports at the end, in the hparams (TensorBoard's HParams tab) and per evaluation; TensorBoard's
# table shows the metrics in this order, so what a sweep compares comes first.
HPARAM_METRICS = (
    "acc/test_orbit",
    "dist_to_E_rel/total",
    "acc/test_projected",
    "acc/test",
    "acc/test_orbit_projected",
    "dist_to_E/total",
    "equiv/test_error",
)


FUNCTION_TAG = "loss/function"  # γ_f·Γ_f, logged by runs with a function-penalized phase (after the distances)


def step_tags(layer_names: Sequence[str], function: bool = False) -> tuple[str, ...]:
    """The per-step scalars, in ``step_rows`` order; ``function``: with γ_f·Γ_f's column."""
    tags = ("loss/data", "loss/reg", "loss/total", "gamma/t", "lr/t", *distance_tags(layer_names))
    return (*tags, FUNCTION_TAG) if function else tags


def step_rows(
    loss: torch.Tensor,
    dist: torch.Tensor,
    gamma: torch.Tensor,
    lr: torch.Tensor,
    data_scale: float,
    function: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per seed (and step): R, γΓ = γ/2·d², data_scale·R + γΓ (+ γ_fΓ_f), γ_t, η_t, then the distances
    (``Distances.values``), then γ_fΓ_f where ``function`` is given.

    loss (...), dist (..., layers + 2), gamma (...), lr (...) and function (...) share their leading axes;
    the rows are (..., tags).
    """
    data = loss.to(dist.dtype)
    gamma = gamma.to(dist.dtype).expand_as(data)
    reg = dist[..., -2].square() * (0.5 * gamma)
    total = data * data_scale + reg if data_scale != 1 else data + reg
    columns = [data, reg, total, gamma, lr.to(dist.dtype).expand_as(data)]
    if function is None:
        return torch.cat([torch.stack(columns, dim=-1), dist], dim=-1)
    function = function.to(dist.dtype)
    columns[2] = total + function
    return torch.cat([torch.stack(columns, dim=-1), dist, function[..., None]], dim=-1)


# The widest activation of one evaluation chunk, all seeds together. Under glibc's largest mmap
# threshold (32 MiB), with ``run.machine.retain_freed_memory``, a chunk's temporaries are reused from
# the heap instead of being mapped and page-faulted anew (docs/design.md, "Evaluation").
EVAL_BYTES = 8 << 20


def eval_chunk(model: EqCNN, budget: int = EVAL_BYTES) -> int:
    """Images per evaluation chunk: the widest activation of all seeds stays within ``budget`` bytes."""
    per_image = model.n_seeds * model.widest_activation() * model.flat.element_size()
    return max(1, budget // per_image)


@torch.no_grad()
def evaluate(
    model: EqCNN,
    data: Data,
    group: Group,
    train_images: int | None = None,
    budget: int = EVAL_BYTES,
    batch_norm_chunk: int = 10,
) -> list[dict[str, float]]:
    """Per seed: accuracies and equivariance errors of the model (SPEC §7), and of its projection Π_E(A).

    The projected model (SPEC §10) is the exactly equivariant network nearest to the weights:
    its accuracy is what the run would give if snapped onto E. ``train_images``: acc/train on the
    first that many training images (None: all). Every figure is a sum over chunks of images, each
    chunk's activations within ``budget`` bytes, so memory does not grow with the data set; with a
    batch norm that evaluates with batch statistics, chunks of ``batch_norm_chunk`` images (the run's
    batch size). Everything is evaluated as such (``EqCNN.norm_state``): running statistics where the
    model keeps them, never updated.
    """
    weights = model.weights()
    biases = list(model.biases) if model.arch.bias else None
    norm = model.norm_state(train=False)
    # A batch norm of batch statistics normalizes with those of the images it is given (nets/layers.py):
    # evaluated in chunks of the training batch's size, its statistics are over as many images as in
    # training. With running statistics (SPEC §12) each image's outputs depend on that image alone.
    coupled = model.arch.couples_images  # the images of a chunk share the norm's statistics
    chunk = batch_norm_chunk if coupled else eval_chunk(model, budget)
    n_train = len(data.y_train) if train_images is None else min(train_images, len(data.y_train))
    n_test, orbit = len(data.y_test), len(data.y_test) * group.order
    train = _correct(model.arch, weights, biases, data.x_train[:n_train], data.y_train[:n_train], chunk, norm)
    own = _orbit_sums(model.arch, weights, biases, data, group, chunk, norm, errors=True, layers=not coupled)
    # The projected model Π_E(A) (made once per evaluation) keeps the model's biases, running statistics
    # and affine: one number per field (or class), hence G-invariant, so it stays exactly equivariant.
    # (Per-channel statistics of regular fields, batchnorm_channel, are not: no network with them is.)
    # Where the architecture is exact, Π_E(A) is an invariant network: its predictions on g·x are those on x
    # (to round-off, SPEC §2, §11), so its orbit is not computed again, |G| − 1 of its |G| passes saved.
    exact = not (model.arch.equivariance_breakers() or model.arch.norm_breakers())
    snapped = _orbit_sums(model.arch, model.space.project_e(weights), biases, data, group, chunk, norm, invariant=exact)
    values = {
        "acc/train": train / n_train,
        "acc/test": own["acc/test"] / n_test,
        "acc/test_orbit": own["acc/test_orbit"] / orbit,
        "equiv/test_error": own["equiv/test_error"] / orbit,
        "equiv/test_consistency": own["equiv/test_consistency"] / n_test,
        "acc/test_projected": snapped["acc/test"] / n_test,
        "acc/test_orbit_projected": snapped["acc/test_orbit"] / orbit,
    }
    # equiv/layer/<conv>: e_l at A (SPEC §11), from the orbit's own forward passes unless a batch norm of
    # batch statistics couples the images of a chunk (then each image is turned on its own:
    # ``layer_equivariance``)
    if coupled:
        values.update(layer_errors(model, data.x_test, group, chunk))
    else:
        values.update(zip(layer_tags(model.layer_names[:-1]), own["layers"] / orbit))
    rows = torch.stack(list(values.values()), dim=1).tolist()  # one host read for every seed
    return [dict(zip(values, row)) for row in rows]


def _correct(
    arch, weights, biases, x: torch.Tensor, y: torch.Tensor, chunk: int, norm: NormState | None = None
) -> torch.Tensor:
    """(N,) float64: each seed's number of correctly classified images of x."""
    total = torch.zeros(weights[0].shape[0], dtype=torch.float64, device=x.device)
    for i in range(0, len(x), chunk):
        total += (logits_at(arch, weights, x[i : i + chunk], biases, norm).argmax(-1) == y[i : i + chunk]).sum(1)
    return total


def _orbit_sums(
    arch,
    weights,
    biases,
    data: Data,
    group: Group,
    chunk: int,
    norm: NormState | None = None,
    errors: bool = False,
    layers: bool = False,
    invariant: bool = False,
) -> dict[str, torch.Tensor]:
    """(N,) float64 sums over the test set and its |G| transforms: correct at g = e, correct over the
    orbit, and (``errors``) ‖f(g·x) − f(x)‖ / ‖f(x)‖ and whether every g·x gets x's class; and
    (``layers``) per hidden layer ‖φ_l(g·x) − ρ_l(g)·φ_l(x)‖ / ‖φ_l(x)‖ ("layers",
    (layers, N)) from the same forward passes. ``norm``: the batch norm's state (``EqCNN.norm_state``).
    ``invariant``: the network is exactly G-invariant (an exact architecture at weights in E), so every g·x
    is classified as x is and only g = e is computed."""
    n, device = weights[0].shape[0], data.x_test.device
    keys = ("acc/test", "acc/test_orbit") + (("equiv/test_error", "equiv/test_consistency") if errors else ())
    sums = {key: torch.zeros(n, dtype=torch.float64, device=device) for key in keys}
    perms = channel_perms(arch, group, device) if layers else []
    sums["layers"] = torch.zeros(len(perms), n, dtype=torch.float64, device=device)
    for i in range(0, len(data.y_test), chunk):
        x, y = data.x_test[i : i + chunk], data.y_test[i : i + chunk]
        logits, base = [], None
        for g in range(1 if invariant else group.order):
            xg = group.act(x, g)
            if not layers:
                logits.append(logits_at(arch, weights, xg, biases, norm))
                continue
            maps = list(block_outputs(arch, weights, xg, biases, norm))
            logits.append(head_at(arch, weights, maps[-1], biases))
            if g == 0:
                base = reference_maps(maps, n)  # φ_l(x) (B, N, C, H, W) and its norms
            else:
                sums["layers"] += error_sums(group, base, maps, torch.full((len(y),), g), perms)
        orbit = torch.stack(logits)
        pred = orbit.argmax(-1)  # (|G|, N, B), or (1, N, B) for an invariant network; pred[0] is the identity's
        sums["acc/test"] += (pred[0] == y).sum(1)
        sums["acc/test_orbit"] += (pred == y).sum((0, 2)) * (group.order if invariant else 1)
        if errors:
            err = (orbit - orbit[0]).norm(dim=-1) / orbit[0].norm(dim=-1).clamp_min(torch.finfo(orbit.dtype).tiny)
            sums["equiv/test_error"] += err.double().sum((0, 2))
            sums["equiv/test_consistency"] += (pred == pred[0]).all(0).sum(1)
    return sums
