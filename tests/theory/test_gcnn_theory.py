"""SPEC §5.1–§5.5 for a G-CNN (SPEC §9), through the real training loop on real data.

The theory of §5 holds for any representations of G on the layers' spaces: with regular fibers
only the action of G on the weights changes (channels move too), so the same statements must
hold. All runs: ``model=gcnn`` (lifting layer, a C4 group convolution, invariant head) on 28x28
digits (200 training images), orthogonal parametrization; ``augment=orbit`` gives the exact
∇R^aug of each batch.
"""

import math

import pytest

from ..helpers import rel

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("one_thread"),
]  # a real sweep or many steps of a wider network per test

BASE = (
    "model=gcnn",
    "dataset.train_limit=200",
    "dataset.test_limit=50",
    "epochs=100",
    "init.scheme=perturbed_equivariant",
)
ON_E = ("init.sigma=0",)  # A₀ = the equivariant G-CNN itself: exactly on E


# SPEC §5.1. On this G-CNN at lr 0.01 over 60 steps the statement measures 1.6e-7 (float32) and
# 2.6e-16 (float64); the tolerances are those of the scalar test (tests/theory/test_spec5.py),
# well above round-off and 10^4 below a real departure (§5.3). At lr 0.05 see the next test.
@pytest.mark.parametrize("dtype,tol", [("float32", 2e-5), ("float64", 1e-13)])
def test_5_1_e_is_invariant_under_orbit_augmented_sgd(run_train, dtype, tol):
    run = run_train(*BASE, *ON_E, "mode=augmented", "augment=orbit", "lr=0.01", "max_steps=60", f"dtype={dtype}")
    steps, values = run.scalars("dist_to_E_rel/total")
    assert steps == list(range(61))
    assert max(values) <= tol


@pytest.mark.slow
def test_5_1_at_a_large_step_round_off_is_amplified_not_a_departure(run_train):
    """At lr 0.05 (seed 0) E is invariant but unstable for the augmented flow here (SPEC §5.6:
    eqtrain-analyze at A₀ on these 200 images gives λ_min(H_⊥) ≈ −78): round-off grows ~1.24× per
    step, to 1e-2 in float32 within 50 steps. In float64 the same curve starts ~10^9 lower and stays ≤1e-11: a systematic
    departure (a wrong projection or action) would not care about the precision."""
    common = (*BASE, *ON_E, "mode=augmented", "augment=orbit", "lr=0.05", "max_steps=60")
    single = max(run_train(*common, "dtype=float32").scalars("dist_to_E_rel/total")[1])
    double = max(run_train(*common, "dtype=float64").scalars("dist_to_E_rel/total")[1])
    assert single > 1e-3  # amplified far above float32 round-off ...
    assert double <= 1e-10  # ... and still at round-off in float64
    assert single / double > 1e7  # the ratio of the two precisions' round-off, ~ε32/ε64 = 5e8


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-12)])
def test_5_2_augmented_and_equivariant_dynamics_coincide_on_e(run_train, dtype, tol):
    """SPEC §5.2 at the paper's lr 1e-3: orbit-augmented SGD in L and SGD on E's orbit coordinates
    (a different parametrization: one number per joint orbit) give the same weights."""
    common = (*BASE, *ON_E, "lr=0.001", "max_steps=60", f"dtype={dtype}")
    augmented = run_train(*common, "mode=augmented", "augment=orbit").weights()
    equivariant = run_train(*common, "mode=equivariant").weights()
    start = run_train(*common, "mode=equivariant", "max_steps=0").weights()
    assert rel(augmented, equivariant) <= tol
    assert rel(equivariant, start) > 1e-3  # the weights did move: the check has teeth


def test_5_3_nominal_training_leaves_e(run_train):
    """SPEC §5.3: digits are not rotation-symmetric, so nominal SGD leaves the G-CNN's E at once."""
    run = run_train(*BASE, *ON_E, "mode=nominal", "lr=0.05", "max_steps=5")
    _, values = run.scalars("dist_to_E_rel/total")
    assert values[0] < 1e-6
    assert min(values[1:]) > 1e-3


# SPEC §5.4: the E⊥ part evolves as ξ̇ = −(H_⊥ + γI)ξ, i.e. per SGD step a factor 1 − lr(λ + γ).
LR = 0.01


def contraction_rate(run, first: int = 20, last: int = 60) -> float:
    """Measured log-rate of d(A_t) per step over steps first..last."""
    steps, d = run.scalars("dist_to_E/total")
    d = dict(zip(steps, d))
    return (math.log(d[last]) - math.log(d[first])) / (last - first)


@pytest.mark.slow
def test_5_4_regularization_makes_e_an_attractor(run_train):
    """SPEC §5.4: with γ = 10 ≫ γ_crit, augreg shrinks d(A_t) at ≈ 1 − lr·γ per step; without the
    regularizer it does not shrink geometrically; a γ past 2/lr oscillates away at |1 − lr·γ|."""
    common = (*BASE, "augment=orbit", f"lr={LR}", "max_steps=60", "init.sigma=1e-3")
    assert contraction_rate(run_train(*common, "mode=augreg", "gamma=10")) == pytest.approx(
        math.log(1 - LR * 10), rel=0.15
    )
    assert contraction_rate(run_train(*common, "mode=augmented")) > -0.01
    assert contraction_rate(run_train(*common, "mode=augreg", "gamma=250")) == pytest.approx(
        math.log(abs(1 - LR * 250)), rel=0.15
    )


def test_5_5_incompatible_support_leaves_e(run_train):
    """SPEC §5.5: with ω skewed, orbit-augmented training of the G-CNN from E leaves E; with the
    G-invariant ω cross it stays at round-off."""
    common = (*BASE, *ON_E, "mode=augmented", "augment=orbit", "lr=0.05", "max_steps=30")
    skewed = max(run_train(*common, "model.support=skewed").scalars("dist_to_E_rel/total")[1])
    cross = max(run_train(*common, "model.support=cross").scalars("dist_to_E_rel/total")[1])
    assert cross <= 2e-5
    assert skewed >= 1e-2


# SPEC §11: P4CNN (valid 3x3 convs, 2x2 max pooling, ReLU, a batch norm per field with the batch's own
# statistics) on 28x28 digits. An orbit-augmented batch holds every g·x, so g·batch is a permutation of
# the batch and its statistics are the batch's: R^aug stays G-invariant and §5.1 / §5.3 must hold as for
# the G-CNN above.
P4 = ("model=p4cnn", "dataset.train_limit=40", "dataset.test_limit=20", "epochs=100", "dtype=float64")
P4_ON_E = (*P4, "init.scheme=perturbed_equivariant", "init.sigma=0")


# At the paper's lr 1e-3 d(A)/‖A‖ stays ≤ 6e-17 over 10 steps and every e_l ≤ 1e-14 (measured). At lr 0.01
# the dynamics amplify round-off (~3x per step by step 10: d 1.6e-14, e_6 3.6e-12), as for the G-CNN above.
def test_5_1_e_is_invariant_for_p4cnn_with_batch_norm_and_max_pooling(run_train):
    run = run_train(*P4_ON_E, "mode=augmented", "augment=orbit", "lr=0.001", "max_steps=10")
    steps, values = run.scalars("dist_to_E_rel/total")
    assert steps == list(range(11)) and max(values) <= 1e-13
    layers = [run.scalars(f"equiv/layer/conv{i}")[1][-1] for i in range(1, 7)]
    assert max(layers) <= 1e-12  # and its functions stay equivariant, layer by layer


def test_5_3_nominal_p4cnn_leaves_e_and_every_layer_shows_it(run_train):
    run = run_train(*P4_ON_E, "mode=nominal", "lr=0.05", "max_steps=5")
    values = run.scalars("dist_to_E_rel/total")[1]
    assert values[0] < 1e-12 and min(values[1:]) > 1e-3
    first, last = (run.scalars(f"equiv/layer/conv{i}")[1] for i in (1, 6))
    assert first[0] < 1e-12 and first[-1] > 1e-4 and last[-1] > 1e-4
