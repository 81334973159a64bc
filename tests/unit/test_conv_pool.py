"""A block's convolution and pooling (``conv.conv_pool``): the same function as conv then pool however
it is computed — average pooling taken into the filter (``pooled_filter``), an ensemble's few-channel
conv by patches and one batched matmul, a conv before max pooling on channels-last maps — to float
round-off, forward, backward and second derivative (docs/performance.md, "The input layer of an
ensemble")."""

import pytest
import torch
import torch.nn.functional as F

from eqtrain.nets import conv
from eqtrain.nets.conv import PATCHES_BELOW, conv_pool, pooled_filter

# Relative to the largest entry. float32 measured <= 3.2e-6 over these cases (values and gradients, the
# plain-conv patches cases included), 3 seeds, 1 and 2 threads.
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def plain(h, weight, bias, stride, pad, groups, p, kind):
    out = F.conv2d(h, weight, bias, stride, pad, groups=groups)
    return out if p == 1 else (F.avg_pool2d(out, p) if kind == "avg" else F.max_pool2d(out, p))


def close(a: torch.Tensor, b: torch.Tensor, dtype) -> bool:
    return a.shape == b.shape and bool((a - b).abs().max() <= TOL[dtype] * b.abs().max())


def counting(monkeypatch, name: str) -> list[int]:
    """Count the calls of ``conv.<name>``, still calling it."""
    calls, original = [], getattr(conv, name)
    monkeypatch.setattr(conv, name, lambda *args: calls.append(1) or original(*args))
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("channels", [1, 3, 4, 16])
@pytest.mark.parametrize("p,kind", [(1, "avg"), (2, "avg"), (3, "avg"), (2, "max")])
@pytest.mark.parametrize("stride,pad,size", [(1, 1, (15, 13)), (1, 0, (14, 14)), (2, 1, (15, 15))])
def test_conv_then_pool_however_computed_equals_the_plain_ops(
    monkeypatch, dtype, groups, channels, p, kind, stride, pad, size
):
    fused, patched = counting(monkeypatch, "pooled_filter"), counting(monkeypatch, "_conv_by_patches")
    channels_last = counting(monkeypatch, "_conv_max_pool_channels_last")
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(4, groups * channels, *size, generator=gen, dtype=dtype, requires_grad=True)
    weight = torch.randn(groups * 5, channels, 3, 3, generator=gen, dtype=dtype, requires_grad=True)
    bias = torch.randn(groups * 5, generator=gen, dtype=dtype, requires_grad=True)
    ours, ref = (f(h, weight, bias, stride, pad, groups, p, kind) for f in (conv_pool, plain))
    pooled = kind == "avg" and p > 1 and stride == 1
    assert len(fused) == pooled  # the routing rules, really taken
    assert len(patched) == (channels < PATCHES_BELOW and groups > 1)
    assert len(channels_last) == (kind == "max" and p > 1 and not patched)
    assert close(ours, ref, dtype)
    g = torch.randn(ref.shape, generator=gen, dtype=dtype)
    for a, b in zip(torch.autograd.grad(ours, (h, weight, bias), g), torch.autograd.grad(ref, (h, weight, bias), g)):
        assert close(a, b, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 4, 16])
@pytest.mark.parametrize("p", [2, 3])
@pytest.mark.parametrize("k", [3, 5])
def test_under_inference_mode_every_average_pooling_goes_into_the_filter(monkeypatch, dtype, channels, p, k):
    """The evaluation (inference mode): the pooled filter at any width and kernel size, the same numbers to
    round-off, and training still works afterwards (the cached 0/1 matrix is an ordinary tensor)."""
    fused = counting(monkeypatch, "pooled_filter")
    conv._box_spread.cache_clear()
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(4, 2 * channels, 15, 13, generator=gen, dtype=dtype)
    weight = torch.randn(2 * 5, channels, k, k, generator=gen, dtype=dtype)
    with torch.inference_mode():
        ours, ref = conv_pool(h, weight, None, 1, k // 2, 2, p, "avg"), plain(h, weight, None, 1, k // 2, 2, p, "avg")
    assert len(fused) == 1
    assert close(ours, ref, dtype)
    weight.requires_grad_()
    (grad,) = torch.autograd.grad(conv_pool(h, weight, None, 1, k // 2, 2, p, "avg").sum(), weight)
    assert close(grad, torch.autograd.grad(plain(h, weight, None, 1, k // 2, 2, p, "avg").sum(), weight)[0], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 3])
def test_a_plain_conv_with_many_filters_on_few_channels_is_patches_too(monkeypatch, dtype, channels):
    """The evaluation's input shown to every seed: one plain conv with all N·C filters, patches and a matmul
    from ``PATCHES_PLAIN_FROM`` filters on (one fewer: oneDNN), the same numbers to round-off."""
    patched = counting(monkeypatch, "_conv_by_patches")
    gen = torch.Generator().manual_seed(4)
    h = torch.randn(5, channels, 15, 13, generator=gen, dtype=dtype, requires_grad=True)
    weight = torch.randn(conv.PATCHES_PLAIN_FROM, channels, 3, 3, generator=gen, dtype=dtype, requires_grad=True)
    for filters, routed in ((weight, 1), (weight[:-1], 1)):
        ours, ref = conv_pool(h, filters, None, 1, 1, 1, 2, "avg"), plain(h, filters, None, 1, 1, 1, 2, "avg")
        assert len(patched) == routed and close(ours, ref, dtype)
        g = torch.randn(ref.shape, generator=gen, dtype=dtype)
        for a, b in zip(torch.autograd.grad(ours, (h, weight), g), torch.autograd.grad(ref, (h, weight), g)):
            assert close(a, b, dtype)


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("channels", [1, 4])
@pytest.mark.parametrize("groups", [1, 3])
def test_every_path_is_twice_differentiable(groups, channels, kind):
    """eqtrain-analyze differentiates the loss twice in the weights: the Hessian-vector product of every
    path (the pooled filter, patches on 1 channel per group, channels-last before max pooling) equals that
    of conv then the pooling (float64, ≤1e-12 relative)."""
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(3, groups * channels, 12, 12, generator=gen, dtype=torch.float64)
    weight = torch.randn(groups * 4, channels, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)

    def hessian_vector(f):
        (grad,) = torch.autograd.grad(f(h, weight, None, 1, 1, groups, 2, kind).tanh().sum(), weight, create_graph=True)
        return torch.autograd.grad(grad.square().sum(), weight)[0]

    assert close(hessian_vector(conv_pool), hessian_vector(plain), torch.float64)


@pytest.mark.parametrize("p", [2, 3])
def test_the_pooled_filter_is_the_filter_summed_over_the_window_shifts(p):
    """w ⊛ box_p / p²: entry (r, s) sums w[i, j] over i + a = r, j + b = s, 0 ≤ a, b < p (float64, ≤ 1e-15)."""
    w = torch.randn(2, 3, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = torch.zeros(2, 3, 3 + p - 1, 3 + p - 1, dtype=torch.float64)
    for a in range(p):
        for b in range(p):
            expected[..., a : a + 3, b : b + 3] += w
    torch.testing.assert_close(pooled_filter(w, p), expected / p**2, rtol=1e-15, atol=1e-15)
