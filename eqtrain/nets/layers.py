"""The pieces of a conv block and of the head: the seed-grouped convolution and its pooling (the weights
passed in), and the parameter-free ones: pooling, normalization, group pooling.

Each acts on the seed-stacked maps of ``cnn.block_outputs`` — shape (B, N·C, H, W), seed-major,
and within a seed field-major (channel ``field·size + h``, ``FieldType``) — and commutes with G
exactly where SPEC §1, §9 and §11 say it does:

- average or max pooling over aligned p×p blocks, on sizes p divides (G maps aligned blocks onto
  aligned blocks; a mean or a maximum ignores the order of its arguments);
- LayerNorm over (H, W) per channel (G moves pixels within a channel and permutes whole channels);
- batch normalization with one mean and variance per seed and per *field*, over the batch, the
  field's channels and the pixels: g permutes exactly those numbers, image by image, so the
  statistics do not change when any image of the batch is turned by any g (SPEC §11). Per channel
  (``batchnorm_channel``, torch's BatchNorm2d without affine) the statistics of a regular field's
  channels are permuted only when the whole batch turns by one g: turning one image changes the
  features of the others, so a network with it is not G-equivariant image by image;
- group pooling: the maximum over a regular field's |G| channels, which g only permutes.

None of these has learnable weights, so none adds to A or to ``EqCNN.flat``. The convolution and its
pooling (``conv_pool``) are conv then pool however they are computed, equal to float round-off, so they
commute with G wherever conv then pool does.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

POOL_KINDS = ("avg", "max")
# layernorm: over (H, W) per channel (SPEC §1); batchnorm: per field (SPEC §11); batchnorm_channel: per
# channel, as torch's BatchNorm2d (not G-equivariant on regular fields); none.
NORMS = ("layernorm", "batchnorm", "batchnorm_channel", "none")
BATCH_NORMS = ("batchnorm", "batchnorm_channel")  # the norms that couple the images of a batch
BN_EPS = 1e-5  # torch's BatchNorm default
# With autograd, maps of at least this many numbers are pooled by ``_AvgPool``: measured faster than
# avg_pool2d from 125k numbers (0.50 against 0.63 ms), slower at 31k (0.37 against 0.23 ms)
POOL_VIEWS_FROM = 1 << 16
# A conv reading fewer channels (per seed) than this takes in its average pooling (``conv_pool``; without
# a gradient every conv does), and on the CPU, grouped by seed, is computed from patches by one batched
# matmul: oneDNN's grouped kernels are 2-5x slower there (1-3 channels per group) and faster from 4 on
# (docs/performance.md).
PATCHES_BELOW = 4


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
    """A block's convolution ``F.conv2d(h, weight, bias, stride, pad, groups=groups)`` of seed-stacked maps
    h (B, N·C, H, W), then its p×p pooling of kind ``kind``: the same function, computed the cheapest
    way measured (docs/performance.md, "The input layer of an ensemble").

    - A conv of stride 1 followed by average pooling is one conv of stride p with the filter
      w ⊛ box_p / p² (``pooled_filter``): the mean over a window of conv outputs is linear in them, so it
      is a (k+p−1)² filter at the pooled pixels alone, and the full-size map (4x the pooled one for
      p = 2) is never made. Taken where it pays (``pool_in_filter``): on few channels (C <
      ``PATCHES_BELOW``: the input layer), and everywhere when no gradient is taken (the evaluation).
    - With groups = N > 1, C < ``PATCHES_BELOW`` (an ensemble's input layer: 1 channel for digits, 3 for
      CIFAR-10) goes through ``_conv_by_patches``; otherwise oneDNN's (or cuDNN's) grouped conv.
    Both are the same sums as conv-then-pool in another order: equal to float round-off (a test).
    """
    differentiated = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    if pool_in_filter(weight.shape[1], stride, p, kind, differentiated):
        return _conv(h, pooled_filter(weight, p), bias, p, pad, groups)
    h = _conv(h, weight, bias, stride, pad, groups)
    return pool(h, p, kind) if p > 1 else h


def pool_in_filter(channels: int, stride: int, p: int, kind: str, differentiated: bool = True) -> bool:
    """Whether ``conv_pool`` takes the pooling into the filter: a conv of stride 1, then p×p average pooling
    (p > 1), reading fewer than ``PATCHES_BELOW`` channels (per seed) or not ``differentiated`` (the
    evaluation). oneDNN's (k+p−1)² stride-p forward beats k×k and then pooling at every width, its
    backward only on few channels (docs/performance.md)."""
    return kind == "avg" and p > 1 and stride == 1 and (channels < PATCHES_BELOW or not differentiated)


def pooled_filter(weight: torch.Tensor, p: int) -> torch.Tensor:
    """(O, C, k, k) → (O, C, k+p−1, k+p−1): the filter of a k×k conv followed by p×p average pooling, the
    full convolution of each k×k filter with a p×p box, divided by p²: one small matmul with a 0/1 matrix
    (for 30 seeds' filters 0.13 ms forward and backward, against 0.6-0.9 ms as a conv with the box)."""
    o, c, k, _ = weight.shape
    spread = _box_spread(k, p, weight.dtype, weight.device)
    return (weight.reshape(o * c, k * k) @ spread).view(o, c, k + p - 1, k + p - 1) / (p * p)


@functools.cache
def _box_spread(k: int, p: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(k², (k+p−1)²) of 0 and 1: entry (i, j), (r, s) is 1 where 0 ≤ r − i < p and 0 ≤ s − j < p."""
    m = k + p - 1
    spread = torch.zeros(k, k, m, m, dtype=dtype, device=device)
    for a in range(p):
        for b in range(p):
            spread[:, :, a : a + k, b : b + k] += torch.eye(k * k, dtype=dtype, device=device).view(k, k, k, k)
    return spread.view(k * k, m * m)


def _conv(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, pad: int, groups: int):
    if groups == 1 or weight.shape[1] >= PATCHES_BELOW or h.device.type != "cpu":
        return F.conv2d(h, weight, bias, stride, pad, groups=groups)
    return _conv_by_patches(h, weight, bias, stride, pad, groups)


def _conv_by_patches(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, pad: int, n: int):
    """The grouped convolution as one batched matmul: every seed's (out, C·k²) filters times the (C·k², pixels)
    patches of each of its images, which are k² strided views of the padded map stacked (C·k² rows per seed,
    k² times the input: small only when C is). The output comes out in the seed-major layout of the maps."""
    b, _, height, width = h.shape
    out, c, k, _ = weight.shape
    if pad:
        h = F.pad(h, (pad, pad, pad, pad))
    ho, wo = (height + 2 * pad - k) // stride + 1, (width + 2 * pad - k) // stride + 1
    span_h, span_w = stride * (ho - 1) + 1, stride * (wo - 1) + 1
    views = [h[:, :, i : i + span_h : stride, j : j + span_w : stride] for i in range(k) for j in range(k)]
    patches = torch.stack(views, 2).view(b, n, c * k * k, ho * wo)  # rows in the filters' (channel, i, j) order
    y = torch.matmul(weight.reshape(n, out // n, c * k * k), patches).view(b, out, ho, wo)
    return y if bias is None else y + bias[:, None, None]


def avg_pool(x: torch.Tensor, p: int) -> torch.Tensor:
    """p×p average pooling, equal bit for bit to ``F.avg_pool2d(x, p)``, forward and backward (on a GPU:
    avg_pool2d itself).

    Forward: the window's p² strided views added in avg_pool2d's order and divided as it does; backward:
    each gradient divided by p² and spread over its window, which is what avg_pool2d's backward computes
    (the dropped last rows and columns get 0). On the CPU avg_pool2d's kernels were a third of the
    30-seed training step and its forward the evaluation's costliest op; these are 4x (forward) and
    1.4x (backward) faster on large maps (docs/performance.md). Differentiable twice (eqtrain-analyze's
    Hessian).
    """
    if x.device.type != "cpu":  # CUDA divides by a scalar as a·(1/b): not avg_pool2d's bits for odd p
        return F.avg_pool2d(x, p)
    if torch.is_grad_enabled() and x.requires_grad:  # small maps: avg_pool2d's one call costs less
        return _AvgPool.apply(x, p) if x.numel() >= POOL_VIEWS_FROM else F.avg_pool2d(x, p)
    return _avg_pool_views(x, p)


def _avg_pool_views(x: torch.Tensor, p: int) -> torch.Tensor:
    if p == 1:
        return x.clone()  # a new tensor, as below (the in-place adds never touch x)
    h, w = x.shape[-2] // p, x.shape[-1] // p
    v = x[..., : h * p, : w * p].reshape(*x.shape[:-2], h, p, w, p)
    total = v[..., 0, :, 0] + v[..., 0, :, 1]  # a new tensor: the other views are added into it in place
    for i in range(p):
        for j in range(p):
            if i or j > 1:
                total.add_(v[..., i, :, j])
    return total.div_(p * p)


def _spread(g: torch.Tensor, p: int, size: tuple[int, int]) -> torch.Tensor:
    """avg_pool's backward: g/p² on every pixel of its window, 0 on the rows and columns pooling dropped."""
    h, w = g.shape[-2:]
    share = g / (p * p)
    out = share.new_empty(*g.shape[:-2], h, p, w, p)
    # Written as p strided copies into the window's first row, then that row copied p − 1 times: 3x faster
    # than one copy from an expanded view (whose innermost run is p numbers long) or avg_pool2d's backward.
    for j in range(p):
        out[..., 0, :, j].copy_(share)
    out[..., 1:, :, :].copy_(out[..., :1, :, :].expand_as(out[..., 1:, :, :]))
    out = out.view(*g.shape[:-2], h * p, w * p)
    if (h * p, w * p) != size:
        out = F.pad(out, (0, size[1] - w * p, 0, size[0] - h * p))
    return out


class _AvgPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: int) -> torch.Tensor:
        ctx.p, ctx.size = p, tuple(x.shape[-2:])
        return _avg_pool_views(x, p)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return _spread(g, ctx.p, ctx.size), None


def pool(x: torch.Tensor, p: int, kind: str) -> torch.Tensor:
    """p×p pooling of kind ``avg`` or ``max`` over aligned blocks (a map's last rows and columns that
    do not fill a block are dropped: ``Architecture.equivariance_breakers`` names that case)."""
    return avg_pool(x, p) if kind == "avg" else F.max_pool2d(x, p)


def normalize(x: torch.Tensor, norm: str, field_size: int) -> torch.Tensor:
    """The block's normalization of maps (B, N·C, H, W) whose fields have ``field_size`` channels.

    ``batchnorm`` uses the statistics of the batch it is given — in training the step's batch, in
    evaluation the chunk of images (``metrics.eval_chunk``) — with no running averages and no affine.
    Why: running averages would be state outside A, written by the forward pass, that checkpoints,
    resume, the twin and the functional forward pass (``logits_at`` at weights A) would all have to
    carry. With batch statistics the network stays a function of (A, batch); the price is that an
    image's outputs depend on the other images of its batch. The statistics of g·batch equal those
    of the batch, whether the batch is turned as a whole or image by image, so the block stays exactly
    G-equivariant.
    """
    if norm == "layernorm":
        return F.layer_norm(x, x.shape[-2:])
    if norm in BATCH_NORMS:
        size = field_size if norm == "batchnorm" else 1
        b, c, h, w = x.shape
        # F.batch_norm takes one mean and variance per index of axis 1, over every other axis: here
        # (seed, field), over the batch, the field's channels and the pixels — never across seeds.
        grouped = x.reshape(b, c // size, size, h, w)
        return F.batch_norm(grouped, None, None, training=True, eps=BN_EPS).view(b, c, h, w)
    return x


def group_pool(x: torch.Tensor, field_size: int) -> torch.Tensor:
    """(B, N·C, H, W) → (B, N·C/size): the maximum over each field's channels (C&W's pooling over
    rotations: a regular field becomes a trivial one), then the mean over the pixels. Both commute
    with G, so the result is G-invariant (SPEC §11)."""
    b, c, h, w = x.shape
    return x.reshape(b, c // field_size, field_size, h * w).amax(2).mean(-1)
