"""A block's convolution and its pooling, on the seed-stacked maps of ``cnn.block_outputs`` (B, N·C, H, W),
computed the cheapest way measured (docs/performance.md, "The input layer of an ensemble" and "Every
average pooling in the filter").

``conv_pool`` is ``F.conv2d`` then ``layers.pool`` however it computes them — the pooling taken into the
filter, a seed-grouped conv as one batched matmul over patches, a conv and its max pooling on
channels-last maps — the same sums in another order or layout, equal
to float round-off (tests/unit/test_conv_pool.py). So it commutes with G wherever conv then pool does
(SPEC §1, §9, §11). The rules were measured on the CPU with oneDNN; on a GPU (not measured: no device
was lent) every conv is ``F.conv2d`` then the pooling, as before.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .layers import pool

# A conv grouped by seed on fewer channels per seed than this is patches times the filters in one batched
# matmul: oneDNN's grouped kernels are 2-5x slower on 1-3 channels per group and faster from 4 on.
PATCHES_BELOW = 4
# A plain conv (groups = 1) on so few channels is patches times the filters too where it has at least this
# many filters — the evaluation's input shown to every seed, all N·C filters at once (one 28x28 channel,
# 4x4 stride 2, 22 images: 64 filters 1.29x oneDNN's time, 128 0.88x, 480 0.66x); a single seed's 16
# filters stay on oneDNN (patches 1.8-2.8x slower there).
PATCHES_PLAIN_FROM = 128


def conv_pool(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    pad: int,
    groups: int,
    p: int,
    kind: str,
) -> torch.Tensor:
    """``F.conv2d(h, weight, bias, stride, pad, groups=groups)`` of seed-stacked maps h (B, N·C, H, W), then
    p×p pooling of kind ``kind``.

    - A conv of stride 1 followed by average pooling is one conv of stride p with the filter
      w ⊛ box_p / p² (``pooled_filter``): the mean over a window of conv outputs is linear in them, so
      it is a (k+p−1)² filter at the pooled pixels alone, and the full-size map (4x the pooled one for
      p = 2) is never made, forward or backward (``pool_in_filter``: on the CPU, where it was measured
      faster at every width, docs/performance.md).
    - With C < ``PATCHES_BELOW`` channels per group and groups = N > 1 (an ensemble's input layer: 1
      channel for digits, 3 for CIFAR-10) or ≥ ``PATCHES_PLAIN_FROM`` filters (the evaluation's shared
      input) the conv is ``_conv_by_patches``; otherwise oneDNN's.
    - A oneDNN conv followed by max pooling (P4CNN's and Z2CNN's conv2) runs on channels-last maps
      (``_conv_max_pool_channels_last``).
    """
    on_cpu = h.device.type == "cpu"
    if on_cpu and pool_in_filter(stride, p, kind):
        return _conv(h, pooled_filter(weight, p), bias, p, pad, groups)
    if on_cpu and kind == "max" and p > 1 and not _by_patches(h, weight, groups):
        return _conv_max_pool_channels_last(h, weight, bias, stride, pad, groups, p)
    h = _conv(h, weight, bias, stride, pad, groups)
    return pool(h, p, kind) if p > 1 else h


def pool_in_filter(stride: int, p: int, kind: str) -> bool:
    """Whether ``conv_pool`` (on the CPU) takes the pooling into the filter: a conv of stride 1, then p×p
    average pooling (p > 1)."""
    return kind == "avg" and p > 1 and stride == 1


def pooled_filter(weight: torch.Tensor, p: int) -> torch.Tensor:
    """(O, C, k, k) → (O, C, k+p−1, k+p−1): the filter of a k×k conv followed by p×p average pooling, the
    full convolution of each k×k filter with a p×p box, divided by p²: one small matmul with a 0/1 matrix
    (for 30 seeds' filters 0.13 ms forward and backward, against 0.6-0.9 ms as a conv with the box)."""
    o, c, k, _ = weight.shape
    spread = _box_spread(k, p, weight.dtype, weight.device)
    return (weight.reshape(o * c, k * k) @ spread).view(o, c, k + p - 1, k + p - 1) / (p * p)


@functools.cache
def _box_spread(k: int, p: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(k², (k+p−1)²) of 0 and 1: entry (i, j), (r, s) is 1 where 0 ≤ r − i < p and 0 ≤ s − j < p.

    Made outside inference mode whatever the caller's mode: a cached inference tensor could never be
    saved for a later backward pass."""
    m = k + p - 1
    with torch.inference_mode(False):
        spread = torch.zeros(k, k, m, m, dtype=dtype, device=device)
        for a in range(p):
            for b in range(p):
                spread[:, :, a : a + k, b : b + k] += torch.eye(k * k, dtype=dtype, device=device).view(k, k, k, k)
    return spread.view(k * k, m * m)


def _by_patches(h: torch.Tensor, weight: torch.Tensor, groups: int) -> bool:
    few_channels = weight.shape[1] < PATCHES_BELOW and h.device.type == "cpu"
    return few_channels and (groups > 1 or weight.shape[0] >= PATCHES_PLAIN_FROM)


def _conv(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, pad: int, groups: int):
    if _by_patches(h, weight, groups):
        return _conv_by_patches(h, weight, bias, stride, pad, groups)
    return F.conv2d(h, weight, bias, stride, pad, groups=groups)


def _conv_max_pool_channels_last(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, pad: int, groups: int, p: int
) -> torch.Tensor:
    """oneDNN's conv and max_pool2d on a channels-last copy of h, the pooled map copied back: oneDNN's
    NCHW kernels reorder the full-size map in and out of their blocked layout on every pass, its NHWC
    kernels do not, and the two copies are of the input and of the pooled map (4x smaller). Each copy's
    gradient is copied back to the layout of its input (``_Layout``), so the backward runs channels-last
    between them and NCHW around them. The P4CNN's forward and backward 0.82-0.85x (1 to 30 seeds), the
    Z2CNN's 0.70-0.79x (docs/performance.md)."""
    y = F.conv2d(_Layout.apply(h, torch.channels_last), weight, bias, stride, pad, groups=groups)
    return _Layout.apply(F.max_pool2d(y, p), torch.contiguous_format)


class _Layout(torch.autograd.Function):
    """x copied to ``memory_format``, its gradient copied back to x's layout (``Tensor.contiguous`` hands the
    gradient on as it comes: max_pool2d's backward would get an NCHW gradient for its channels-last
    indices, the batch norm before the conv a channels-last one, both slow paths)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
        ctx.back = (
            torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        )
        return x.contiguous(memory_format=memory_format)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return g.contiguous(memory_format=ctx.back), None


def _conv_by_patches(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, pad: int, groups: int
) -> torch.Tensor:
    """The grouped convolution as one batched matmul: every group's (out, C·k²) filters times the
    (C·k², pixels) patches of each image, which are k² strided views of the padded map stacked (C·k² rows
    per group, k² times the input: small only when C is). The output comes out in the group-major
    (seed-major) layout of the maps."""
    b, _, height, width = h.shape
    out, c, k, _ = weight.shape
    if pad:
        h = F.pad(h, (pad, pad, pad, pad))
    ho, wo = (height + 2 * pad - k) // stride + 1, (width + 2 * pad - k) // stride + 1
    span_h, span_w = stride * (ho - 1) + 1, stride * (wo - 1) + 1
    views = [h[:, :, i : i + span_h : stride, j : j + span_w : stride] for i in range(k) for j in range(k)]
    patches = torch.stack(views, 2).view(b, groups, c * k * k, ho * wo)  # rows in the filters' (channel, i, j) order
    y = torch.matmul(weight.reshape(groups, out // groups, c * k * k), patches).view(b, out, ho, wo)
    return y if bias is None else y + bias[:, None, None]
