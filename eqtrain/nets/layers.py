"""The parameter-free pieces of a conv block and of the head: pooling, normalization, group pooling
(the convolution and its pooling together: ``conv``).

Each acts on the seed-stacked maps of ``cnn.block_outputs`` — shape (B, N·C, H, W), seed-major,
and within a seed field-major (channel ``field·size + h``, ``FieldType``) — and commutes with G
exactly where SPEC §1, §9 and §11 say it does:

- average or max pooling over aligned p×p blocks, on sizes p divides (G maps aligned blocks onto
  aligned blocks; a mean or a maximum ignores the order of its arguments);
- LayerNorm over (H, W) per channel (G moves pixels within a channel and permutes whole channels;
  ``layer_norm``);
- batch normalization with one mean and variance per seed and per *field*, over the batch, the
  field's channels and the pixels: g permutes exactly those numbers, image by image, so the
  statistics do not change when any image of the batch is turned by any g (SPEC §11). Per channel
  (``batchnorm_channel``, torch's BatchNorm2d without affine) the statistics of a regular field's
  channels are permuted only when the whole batch turns by one g: turning one image changes the
  features of the others, so a network with it is not G-equivariant image by image;
- group pooling: the maximum over a regular field's |G| channels, which g only permutes.

None of them has weights in A. The batch norm's optional affine scale and shift (SPEC §12) are learnable
numbers in ``EqCNN.flat``, one per seed and field (per channel for ``batchnorm_channel``): shared by a
field's channels, they are G-invariant, like the biases, and not part of A. Its running statistics
(``NormBlock``) are state, not parameters: ``EqCNN.norm_stats``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

POOL_KINDS = ("avg", "max")
# layernorm: over (H, W) per channel (SPEC §1); batchnorm: per field (SPEC §11); batchnorm_channel: per
# channel, as torch's BatchNorm2d (not G-equivariant on regular fields); none.
NORMS = ("layernorm", "batchnorm", "batchnorm_channel", "none")
BATCH_NORMS = ("batchnorm", "batchnorm_channel")  # the norms that couple the images of a batch (in training)
# A batch norm's statistics in evaluation (SPEC §12): the chunk's own (batch), or running averages kept
# in training (running); in training it always normalizes with the batch's.
BN_STATS = ("batch", "running")
BN_EPS = 1e-5  # torch's BatchNorm default
LN_EPS = 1e-5  # torch's LayerNorm (and GroupNorm) default
# With autograd, maps of at least this many numbers are pooled by ``_AvgPool``: measured faster than
# avg_pool2d from 125k numbers (0.50 against 0.63 ms), slower at 31k (0.37 against 0.23 ms)
POOL_VIEWS_FROM = 1 << 16


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


@dataclass(frozen=True)
class NormBlock:
    """One conv block's batch-norm state (SPEC §12), each (N, F): F statistics per seed — one per field for
    ``batchnorm``, per channel for ``batchnorm_channel``.

    ``mean``, ``var``: running statistics (views of ``EqCNN.norm_stats``, written in place by a training
    pass that updates them), or None (batch statistics in evaluation too); ``scale``, ``shift``: the
    learnable affine (views of ``EqCNN.flat``), or None.
    """

    mean: torch.Tensor | None = None
    var: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    shift: torch.Tensor | None = None


@dataclass(frozen=True)
class NormState:
    """The network's batch-norm state for one forward pass: a ``NormBlock`` per conv block, and how to use it.

    ``train``: normalize with the batch's statistics (else with the running ones, where kept);
    ``momentum``: in training, move the running statistics towards the batch's by this much (None: leave
    them as they are).
    """

    blocks: tuple[NormBlock, ...]
    train: bool = False
    momentum: float | None = None


def normalize(
    x: torch.Tensor,
    norm: str,
    field_size: int,
    block: NormBlock | None = None,
    train: bool = True,
    momentum: float | None = None,
) -> torch.Tensor:
    """The block's normalization of maps (B, N·C, H, W) whose fields have ``field_size`` channels.

    ``batchnorm`` normalizes with one mean and variance per seed and per field (``batchnorm_channel``: per
    channel; everything below holds for it, except G-equivariance on regular fields). Without a ``block`` (the
    default, ``model.bn_stats=batch``, no affine) those are the statistics of the batch it is given — in
    training the step's batch, in evaluation the chunk of images (``metrics.eval_chunk``): the network
    stays a function of (A, batch), as in the earlier studies, whose numbers this reproduces bit for bit;
    the price is that an image's outputs depend on the other images of its batch. With a ``block``
    holding running statistics (``model.bn_stats=running``, SPEC §12, as C&W evaluate P4CNN) a training
    pass (``train``) still normalizes with the batch's statistics and, given a ``momentum`` m, updates the
    running ones as torch's BatchNorm does, r ← (1 − m)·r + m·(the batch's; unbiased for the variance);
    evaluation (not ``train``) normalizes with the running ones, so each image's output depends on that
    image alone. A block's ``scale`` and ``shift`` are applied after either. Per field, every one of
    these numbers is the same for the |G| channels g permutes, so the block stays exactly G-equivariant:
    the batch statistics of g·batch equal those of the batch, whether the batch is turned as a whole or
    image by image, and the running ones and the affine do not depend on the image at all.
    """
    if norm == "layernorm":
        return layer_norm(x)
    if norm not in BATCH_NORMS:
        return x
    size = field_size if norm == "batchnorm" else 1
    b, c, h, w = x.shape
    # F.batch_norm takes one mean and variance per index of axis 1, over every other axis: here
    # (seed, field), over the batch, the field's channels and the pixels — never across seeds.
    grouped = x.reshape(b, c // size, size, h, w)
    if block is None:
        return F.batch_norm(grouped, None, None, training=True, eps=BN_EPS).view(b, c, h, w)
    scale = None if block.scale is None else block.scale.reshape(-1)  # (N, F) → (N·F,), axis 1's order
    shift = None if block.shift is None else block.shift.reshape(-1)
    if block.mean is None or (train and momentum is None):  # the batch's statistics, nothing to update
        out = F.batch_norm(grouped, None, None, scale, shift, training=True, eps=BN_EPS)
    elif train:
        # F.batch_norm updates the running statistics it is given in place, on (N·F,) contiguous tensors:
        # a slice of the (N, S) buffer is not one for N > 1, so it updates copies, written back after.
        mean, var = (t.clone(memory_format=torch.contiguous_format).view(-1) for t in (block.mean, block.var))
        out = F.batch_norm(grouped, mean, var, scale, shift, training=True, momentum=momentum, eps=BN_EPS)
        with torch.no_grad():
            block.mean.copy_(mean.view_as(block.mean))
            block.var.copy_(var.view_as(block.var))
    else:
        mean, var = block.mean.reshape(-1), block.var.reshape(-1)
        out = F.batch_norm(grouped, mean, var, scale, shift, training=False, eps=BN_EPS)
    return out.view(b, c, h, w)


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over (H, W) of each channel of maps (B, C, H, W), without affine: ``F.layer_norm(x, (H, W))``.

    On the CPU it is ``F.group_norm`` with one group per channel: the same mean and (biased) variance over
    the same H·W numbers, the same ε, equal to float round-off (≤ 5.6e-7 relative on maps of spread ~1;
    tests/unit/test_layer_norm.py) and twice differentiable, but torch's group norm kernel is faster on
    these short rows: on 30 seeds' maps 0.44-0.65x (14x14) and 0.69x (7x7) layer_norm's time forward,
    0.90x forward and backward; a 30-seed evaluation 0.81-0.85x; one seed's step 1-2 % slower
    (docs/performance.md, "LayerNorm as a group norm"). On a GPU (not measured): layer_norm.
    """
    if x.device.type == "cpu":
        return F.group_norm(x, x.shape[1], eps=LN_EPS)
    return F.layer_norm(x, x.shape[-2:], eps=LN_EPS)


def group_pool(x: torch.Tensor, field_size: int) -> torch.Tensor:
    """(B, N·C, H, W) → (B, N·C/size): the maximum over each field's channels (C&W's pooling over
    rotations: a regular field becomes a trivial one), then the mean over the pixels. Both commute
    with G, so the result is G-invariant (SPEC §11)."""
    b, c, h, w = x.shape
    return x.reshape(b, c // field_size, field_size, h * w).amax(2).mean(-1)
