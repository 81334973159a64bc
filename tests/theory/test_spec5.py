"""The six statements of SPEC §5, as tests of the real training loop on real data.

All runs: the paper CNN on 28x28 digits (200 training images), group C4, orthogonal
parametrization; `augment=orbit` gives the exact ∇R^aug of each batch.
"""

import math

import pytest
import torch

from eqtrain.geometry.group import Group
from eqtrain.geometry.layer_space import LayerSpace
from eqtrain.geometry.support import make_support

from ..helpers import fast_first

BASE = ("dataset.train_limit=200", "dataset.test_limit=50", "epochs=100", "init.scheme=perturbed_equivariant")
ON_E = ("init.sigma=0",)  # A₀ = the equivariant network itself: exactly on E


def rel_distance(weights_a, weights_b) -> float:
    diff = sum((a - b).double().pow(2).sum() for a, b in zip(weights_a, weights_b))
    return math.sqrt(diff / sum(b.double().pow(2).sum() for b in weights_b))


# SPEC §5.1. How far round-off reaches here, measured over seeds 0-5 x shuffled / in-order data x
# 1 and 2 torch threads (24 runs each, AMD EPYC, torch 2.14.1), max over the 121 logged steps:
# - float64, lr 0.05: 9e-16 .. 2.2e-14 (thread count changes nothing). Bound 1e-12: 45x the
#   largest, 10^10 below a real departure (§5.3, §5.5: 1e-3 .. 1e-1).
# - float32, lr 0.05: 5.6e-7 .. 2.4e-4, and 3.7e-5 vs 5.5e-6 for seed 0 with 1 vs 2 threads: at
#   this lr the dynamics amplify round-off ~1000x, so a float32 bound there would sit inside the
#   spread. float32 is checked at the paper's lr 1e-3, where they do not amplify it:
#   2.9e-8 .. 1.3e-7. Bound 2e-6 (SPEC's own float32 figure): 15x the largest, while nominal
#   training at the same lr leaves E by 8.1e-2 .. 8.8e-2 within the 120 steps (the test below).
@pytest.mark.parametrize("dtype,lr,tol", fast_first([("float32", 0.001, 2e-6), ("float64", 0.05, 1e-12)]))
def test_5_1_e_is_invariant_under_orbit_augmented_sgd(run_train, dtype, lr, tol):
    common = (*BASE, *ON_E, f"lr={lr}", "max_steps=120", f"dtype={dtype}")
    run = run_train(*common, "mode=augmented", "augment=orbit")
    steps, rel = run.scalars("dist_to_E_rel/total")
    assert steps == list(range(121))  # A_0 .. A_119 before each update, then the final A_120
    assert max(rel) <= tol


def test_5_1_float32_bound_is_far_below_a_departure(run_train):
    """The float32 bound of §5.1 has teeth at lr 1e-3: nominal SGD from the same A_0 ∈ E exceeds it 5000-fold
    (measured 8.1e-2 .. 8.8e-2 over the same 24 seeds, data orders and thread counts)."""
    run = run_train(*BASE, *ON_E, "lr=0.001", "max_steps=120", "mode=nominal")
    assert max(run.scalars("dist_to_E_rel/total")[1]) > 1e-2


@pytest.mark.parametrize("dtype,tol", fast_first([("float32", 1e-5), ("float64", 1e-12)]))
def test_5_2_augmented_and_equivariant_dynamics_coincide_on_e(run_train, dtype, tol):
    """SPEC §5.2 at the paper's lr 1e-3 over 120 steps: the same weights up to round-off.

    Measured on this seed over both data orders and 1 / 2 threads: 7.6e-8 .. 1.6e-7 (float32), 1.6e-16
    (float64). Some other seeds' trajectories amplify round-off at this lr (docs/design.md), this one does not."""
    common = (*BASE, *ON_E, "lr=0.001", "max_steps=120", f"dtype={dtype}")
    augmented = run_train(*common, "mode=augmented", "augment=orbit").weights()
    equivariant = run_train(*common, "mode=equivariant").weights()
    start = run_train(*common, "mode=equivariant", "max_steps=0").weights()
    assert rel_distance(augmented, equivariant) <= tol
    assert rel_distance(equivariant, start) > 1e-2  # the weights did move: the check has teeth


def test_5_3_nominal_training_leaves_e(run_train):
    """SPEC §5.3: digits are not rotation-symmetric, so nominal SGD leaves E at once."""
    run = run_train(*BASE, *ON_E, "mode=nominal", "lr=0.05", "max_steps=5")
    steps, rel = run.scalars("dist_to_E_rel/total")
    assert rel[0] < 1e-6  # starts on E
    assert min(rel[1:]) > 1e-3  # a thousand times above round-off after one step


# SPEC §5.4: the E⊥ part evolves as ξ̇ = −(H_⊥ + γI)ξ, i.e. per SGD step a factor 1 − lr(λ + γ).
LR = 0.01


def contraction_rate(run) -> float:
    """Measured log-rate of d(A_t) per step over steps 20..60."""
    steps, d = run.scalars("dist_to_E/total")
    d = dict(zip(steps, d))
    return (math.log(d[60]) - math.log(d[20])) / 40


def test_5_4_regularization_makes_e_an_attractor(run_train):
    common = (*BASE, "augment=orbit", f"lr={LR}", "max_steps=60", "init.sigma=1e-3")
    gamma = 10.0
    rate = contraction_rate(run_train(*common, "mode=augreg", f"gamma={gamma}"))
    expected = math.log(1 - LR * gamma)  # −0.105 per step; H_⊥'s eigenvalues shift it slightly
    assert rate == pytest.approx(expected, rel=0.15)
    # Without the regularizer E does not attract: d(A_t) does not shrink geometrically.
    assert contraction_rate(run_train(*common, "mode=augmented")) > -0.01


@pytest.mark.slow
def test_5_4_too_large_gamma_for_the_step_oscillates_away(run_train):
    """|1 − lr(λ+γ)| > 1 once γ > 2/lr − λ_max: γ = 250 at lr 0.01 grows d by ~1.5 per step."""
    run = run_train(*BASE, "augment=orbit", f"lr={LR}", "max_steps=60", "mode=augreg", "gamma=250")
    assert contraction_rate(run) == pytest.approx(math.log(abs(1 - LR * 250)), rel=0.15)


@pytest.mark.slow  # the mechanism below is the fast check of §5.5
def test_5_5_incompatible_support_leaves_e(run_train):
    """SPEC §5.5: with ω skewed, orbit-augmented training from E leaves E; with ω cross it does not.

    In float64: in float32 the compatible control's round-off, amplified as in §5.1, depends on the
    thread count (4.5e-5 with one torch thread, under 2e-5 with two), which is not what §5.5 is about."""
    common = (*BASE, *ON_E, "mode=augmented", "augment=orbit", "lr=0.05", "max_steps=60", "dtype=float64")
    skewed = max(run_train(*common, "model.support=skewed").scalars("dist_to_E_rel/total")[1])
    cross = max(run_train(*common, "model.support=cross").scalars("dist_to_E_rel/total")[1])
    assert cross <= 1e-13  # the compatible control stays at round-off (float64 bound of §5.1)
    assert skewed >= 1e-2


def test_5_5_skewed_support_gradient_has_a_component_off_e():
    """The mechanism: at A ∈ E the augmented gradient is G-invariant, but Π_L cuts it to ω,
    and on ω \\ ω_G (the skewed corner) it is not zero — so Π_L ∇R^aug ∉ E."""
    group = Group.from_name("c4")
    space = LayerSpace(group, 3, 3, make_support("skewed", 3), dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    invariant_gradient = space.project_h(torch.randn(4, 4, 9, generator=generator, dtype=torch.float64))
    step = space.project_l(invariant_gradient)
    assert space.project_perp(step).norm() > 0.1 * step.norm()
