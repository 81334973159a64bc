"""The training loop: modes, objective, determinism, status."""

import pytest

from eqtrain.training.settings import ConfigError

from ..helpers import TINY, Run, make_config
from ..helpers import train_config as train

MODES = ["nominal", "augmented", "equivariant", "augreg", "nomreg"]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_trains_and_logs(run_train, mode):
    run = run_train(*TINY, f"mode={mode}", "max_steps=8")
    m = run.metrics()
    assert m["status"] == "completed" and m["steps"] == 8
    steps, _ = run.scalars("dist_to_E/total")
    assert steps == list(range(9))


def test_equivariant_mode_stays_on_e_and_is_exactly_invariant(run_train):
    m = run_train(*TINY, "mode=equivariant", "max_steps=30").metrics()
    assert m["dist_to_E_rel/total"] < 1e-6
    assert m["equiv/test_error"] < 1e-5
    assert m["equiv/test_consistency"] == 1.0
    assert m["acc/test"] == m["acc/test_orbit"]
    assert m["n_params"] == m["dim_E"]


def test_objective_terms(run_train):
    """loss/reg = γ/2·d(A)² and loss/total = data_scale·R + γΓ (SPEC §4, §8)."""
    run = run_train(*TINY, "mode=nomreg", "gamma=3", "data_scale=0.1", "max_steps=5")
    _, d = run.scalars("dist_to_E/total")
    _, data = run.scalars("loss/data")
    _, reg = run.scalars("loss/reg")
    _, total = run.scalars("loss/total")
    for i in range(5):
        assert reg[i] == pytest.approx(0.5 * 3 * d[i] ** 2, rel=1e-5)
        assert total[i] == pytest.approx(0.1 * data[i] + reg[i], rel=1e-5)


def test_unregularized_modes_log_zero_regularizer(run_train):
    _, reg = run_train(*TINY, "mode=augmented", "max_steps=3").scalars("loss/reg")
    assert reg == [0.0, 0.0, 0.0]


@pytest.mark.slow
def test_same_config_and_seed_give_identical_metrics(run_train):
    a = run_train(*TINY, "mode=augreg", "max_steps=15").metrics()
    b = run_train(*TINY, "mode=augreg", "max_steps=15").metrics()
    c = run_train(*TINY, "mode=augreg", "max_steps=15", "seed=1").metrics()
    assert a == b
    assert a["dist_to_E/total"] != c["dist_to_E/total"]


def test_divergence_stops_with_status(run_train):
    run = run_train(*TINY, "mode=nominal", "lr=1e38", "max_steps=50")
    m = run.metrics()
    assert m["status"] == "diverged" and m["steps"] < 50


def test_run_directory_is_never_reused(tmp_path):
    cfg = make_config(*TINY, "max_steps=2")
    train(cfg, tmp_path)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, tmp_path)


@pytest.mark.parametrize(
    "override,match",
    [
        ("gamma=-1", "gamma=-1.0 is not valid"),
        ("gamma=inf", "gamma=inf is not valid"),
        ("lr=0", "lr=0.0 is not valid"),
        ("batch_size=0", "batch_size=0 is not valid"),
        ("batch_size=101", "batch_size=101 is not valid: larger than the training set"),
        ("epochs=-1", "epochs=-1 is not valid"),
        ("augment=mixup", "augment='mixup' is not valid: use one of random, orbit"),
        ("device=tpu", "device='tpu' is not valid"),
    ],
)
def test_bad_values_name_key_value_and_valid(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        train(make_config(*TINY, override), tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written


# -- γ schedules and the projected model (SPEC §10) --------------------------------------------


@pytest.mark.parametrize("mode", ["augreg", "nomreg"])
def test_a_gamma_ramp_is_logged_and_is_what_the_regularizer_uses(run_train, mode):
    run = run_train(
        *TINY, f"mode={mode}", "gamma=8", "gamma_schedule=linear", "gamma_start=0", "gamma_ramp_steps=4", "max_steps=8"
    )
    steps, gammas = run.scalars("gamma/t")
    assert steps == list(range(8)) and gammas == [0.0, 2.0, 4.0, 6.0, 8.0, 8.0, 8.0, 8.0]
    _, reg = run.scalars("loss/reg")
    _, dist = run.scalars("dist_to_E/total")
    for g, r, d in zip(gammas, reg, dist):
        assert r == pytest.approx(g / 2 * d**2, rel=1e-5)  # γ_t Γ(A_t), logged in float32
    assert (
        run.metrics()["hparams"]["gamma_schedule"] == "linear" and run.metrics()["hparams"]["gamma_ramp"] == "4 steps"
    )


def test_a_ramp_counts_from_the_start_of_the_run_across_phases_and_seeds(run_train):
    phases = "+phases=[{mode:nominal,epochs:1},{mode:augreg,epochs:1}]"
    common = ("dataset.train_limit=40", "dataset.test_limit=20", "batch_size=10", phases, "gamma=1", "gamma_schedule=exp",
              "gamma_start=0.01", "gamma_ramp_epochs=2")  # fmt: skip
    single = run_train(*common)
    ensemble = run_train(*common, "seeds=2")
    steps, gammas = single.scalars("gamma/t")
    assert gammas[:4] == [0.0] * 4  # phase 1 does not regularize
    expected = [0.01 * 100 ** (t / 8) for t in range(4, 8)]  # 8 ramp steps over the 2 epochs, from step 0
    assert gammas[4:] == pytest.approx(expected, rel=1e-6)
    assert Run(ensemble.dir / "seed=0").scalars("gamma/t") == (steps, gammas)


def test_the_projected_model_of_an_equivariant_run_is_itself(run_train):
    m = run_train(*TINY, "mode=equivariant", "max_steps=5").metrics()
    assert m["acc/test_projected"] == m["acc/test"] and m["acc/test_orbit_projected"] == m["acc/test_orbit"]


def test_the_projected_accuracy_is_that_of_the_model_built_from_pi_e(run_train):
    """SPEC §10: acc/test_projected is the accuracy of Π_E(A_t), the nearest exactly equivariant network."""
    from eqtrain.training.finished_run import restore
    from eqtrain.training.metrics import evaluate

    run = run_train(*TINY, "mode=nominal", "max_steps=30")
    m = run.metrics()
    restored = restore(run.dir)
    snapped = restored.model
    snapped.set_weights(snapped.space.project_e(snapped.weights()))
    metrics = evaluate(snapped, restored.data, restored.group)[0]
    assert m["acc/test_projected"] == metrics["acc/test"] and m["acc/test_orbit_projected"] == metrics["acc/test_orbit"]
    assert m["dist_to_E/total"] > 0.1  # off E: Π_E(A) is a different network from A
