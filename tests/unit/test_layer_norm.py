"""The block's LayerNorm over (H, W) (``layers.layer_norm``): on the CPU a group norm with one group per
channel, the same function as ``F.layer_norm`` to float round-off — values, gradients and second
derivatives — and each image's and channel's result its own, whatever else is in the batch (the
evaluation's figures do not depend on its chunks: tests/unit/test_evaluation.py)."""

import pytest
import torch
import torch.nn.functional as F

from eqtrain.nets import layers
from eqtrain.nets.layers import layer_norm, normalize

# Relative to the largest entry; maps of spread ~1 (float32 measured <= 5.6e-7 over these cases: values,
# gradients, second derivatives; 3 seeds, 1 and 2 threads).
TOL = {torch.float32: 2e-6, torch.float64: 1e-12}
SHAPES = [(4, 6, 14, 14), (3, 5, 7, 7), (2, 3, 5, 3), (1, 480, 14, 14)]


def error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def derivatives(f, x: torch.Tensor) -> list[torch.Tensor]:
    """f(x), its gradient along g and the gradient of that along v (eqtrain-analyze's Hessian needs it)."""
    # the same directions in either precision (float32 numbers), drawn apart from the maps
    g, v = (torch.randn(x.shape, generator=torch.Generator().manual_seed(s)).to(x.dtype) for s in (101, 102))
    y = f(x)
    (grad,) = torch.autograd.grad(y, x, g, create_graph=True)
    (second,) = torch.autograd.grad(grad, x, v)
    return [y, grad, second]


def torchs(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-2:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_layer_norm_equals_torchs_forward_backward_and_second_derivative(monkeypatch, dtype, shape):
    calls, original = [], F.group_norm
    monkeypatch.setattr(layers.F, "group_norm", lambda *a, **k: calls.append(1) or original(*a, **k))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype, requires_grad=True)
    ours, ref = derivatives(lambda t: normalize(t, "layernorm", 1), x), derivatives(torchs, x)
    assert calls  # the group norm route, really taken on the CPU
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and error(a, b) <= TOL[dtype]


@pytest.mark.parametrize("shape", SHAPES[:3], ids=str)
def test_on_near_constant_maps_it_is_as_accurate_as_torchs(shape):
    """Maps 0.5 + 1e-3·noise in float32: their conditioning κ = eps·0.5/1e-3 ≈ 6e-5 is what any float32
    normalization loses. Against the float64 truth both are within 4κ (measured over 3 seeds: ours ≤ 1.6κ,
    torch's layer_norm ≤ 0.8κ; the second derivatives are the largest, group norm's double backward being
    another formula)."""
    x = (0.5 + 1e-3 * torch.randn(shape, generator=torch.Generator().manual_seed(0))).requires_grad_()
    kappa = torch.finfo(torch.float32).eps * 0.5 / 1e-3
    ours, truth = derivatives(layer_norm, x), derivatives(torchs, x.detach().double().requires_grad_())
    for a, b, t in zip(ours, derivatives(torchs, x), truth):
        assert error(a, t) <= 4 * kappa and error(b, t) <= 4 * kappa
    assert error(ours[0], truth[0]) > 0.1 * kappa  # the case is ill-conditioned indeed


def test_each_image_and_channel_is_normalized_on_its_own():
    """Bit for bit the same whether an image comes alone or in a batch, and a channel alone or among others."""
    x = torch.randn(6, 8, 14, 14, generator=torch.Generator().manual_seed(3))
    whole = layer_norm(x)
    for i in range(len(x)):
        assert torch.equal(layer_norm(x[i : i + 1]), whole[i : i + 1])
    assert torch.equal(layer_norm(x[:, 2:5]), whole[:, 2:5])
