"""The six statements of SPEC §5, as tests of the real training loop on real data.

All runs: the paper CNN on 28x28 digits (200 training images), group C4, orthogonal
parametrization; `augment=orbit` gives the exact ∇R^aug of each batch.
"""

import math

import pytest
import torch

from eqtrain.geometry.group import Group
from eqtrain.geometry.projection import LayerSpace
from eqtrain.geometry.support import make_support

from ..helpers import fast_first

BASE = ("dataset.train_limit=200", "dataset.test_limit=50", "epochs=100", "init.scheme=perturbed_equivariant")
ON_E = ("init.sigma=0",)  # A₀ = the equivariant network itself: exactly on E


def rel_distance(weights_a, weights_b) -> float:
    diff = sum((a - b).double().pow(2).sum() for a, b in zip(weights_a, weights_b))
    return math.sqrt(diff / sum(b.double().pow(2).sum() for b in weights_b))


# SPEC §5.1 measured ≤2e-6 (float32) and ≤1e-14 (float64) for one trajectory. Here the same
# statement measures 4.5e-6 / 8.5e-15 on this subset, and other seeds or data orders reach
# ~1e-4 / ~2e-13: round-off amplified ~1000x by the dynamics in both precisions alike. The
# tolerances keep a margin over that, and stay 10^4 below a real departure (§5.3: ~0.1 per step).
@pytest.mark.parametrize("dtype,tol", fast_first([("float32", 2e-5), ("float64", 1e-13)]))
def test_5_1_e_is_invariant_under_orbit_augmented_sgd(run_train, dtype, tol):
    run = run_train(*BASE, *ON_E, "mode=augmented", "augment=orbit", "lr=0.05", "max_steps=120", f"dtype={dtype}")
    steps, rel = run.scalars("dist_to_E_rel/total")
    assert steps == list(range(121))  # A_0 .. A_119 before each update, then the final A_120
    assert max(rel) <= tol


@pytest.mark.parametrize("dtype,tol", fast_first([("float32", 1e-5), ("float64", 1e-12)]))
def test_5_2_augmented_and_equivariant_dynamics_coincide_on_e(run_train, dtype, tol):
    """SPEC §5.2 at the paper's lr 1e-3 over 120 steps: the same weights up to round-off."""
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
