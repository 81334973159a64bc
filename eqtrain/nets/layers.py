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

None of them has learnable weights, so none adds to A or to ``EqCNN.flat``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POOL_KINDS = ("avg", "max")
# layernorm: over (H, W) per channel (SPEC §1); batchnorm: per field (SPEC §11); batchnorm_channel: per
# channel, as torch's BatchNorm2d (not G-equivariant on regular fields); none.
NORMS = ("layernorm", "batchnorm", "batchnorm_channel", "none")
BATCH_NORMS = ("batchnorm", "batchnorm_channel")  # the norms that couple the images of a batch
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
        return layer_norm(x)
    if norm in BATCH_NORMS:
        size = field_size if norm == "batchnorm" else 1
        b, c, h, w = x.shape
        # F.batch_norm takes one mean and variance per index of axis 1, over every other axis: here
        # (seed, field), over the batch, the field's channels and the pixels — never across seeds.
        grouped = x.reshape(b, c // size, size, h, w)
        return F.batch_norm(grouped, None, None, training=True, eps=BN_EPS).view(b, c, h, w)
    return x


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
