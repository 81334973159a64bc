"""The training loop: modes, objective, determinism, status."""

import pytest

from eqtrain.training.settings import ConfigError

from ..helpers import TINY, make_config
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
