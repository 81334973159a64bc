"""The function-penalized modes augfn and nomfn end to end: the log, the hparams, the curves, ensembles,
resume, and the keys' bad values (docs/reference.md; the theory: tests/theory/test_function_penalty.py)."""

import pytest
import torch

from ..helpers import Run, cli, rel, scalars

SMALL = ("dataset.train_limit=60", "dataset.test_limit=20", "batch_size=10", "lr=0.005")
PENALTY = ("mode=augfn", "gamma_f=0.5", "gamma_f_layers=[conv2,logits]")


def test_an_augfn_run_logs_its_penalty_and_strength(run_train, caplog):
    caplog.set_level("INFO", logger="eqtrain")
    run = run_train(*SMALL, *PENALTY, "max_steps=4")
    hparams = run.metrics()["hparams"]
    assert (hparams["mode"], hparams["gamma_f"], hparams["gamma_f_layers"], hparams["gamma"]) == (
        "augfn",
        0.5,
        "conv2,logits",
        0.0,
    )
    curves = scalars(run.dir)
    function, data, total = (curves[t][1] for t in ("loss/function", "loss/data", "loss/total"))
    assert curves["loss/function"][0] == [0, 1, 2, 3] and min(function) > 0  # started off E: a penalty
    # loss/total is summed in float64 and each column logged in float32: a few float32 ulps apart (≤ 2.4e-7)
    assert total == pytest.approx([d + f for d, f in zip(data, function)], rel=1e-6)
    assert "gamma_f=0.5 on conv2, logits" in caplog.text


def test_gamma_f_outside_a_function_penalized_mode_is_ignored_with_a_warning(run_train, caplog):
    run = run_train(*SMALL, "mode=augreg", "gamma=1", "gamma_f=0.5", "max_steps=2")
    assert run.metrics()["hparams"]["gamma_f"] == 0.0
    assert "loss/function" not in scalars(run.dir)
    assert "gamma_f=0.5 is ignored: mode=augreg has no function-space penalty (use augfn or nomfn)" in caplog.text


@pytest.mark.slow
def test_every_seed_of_an_augfn_ensemble_trains_as_it_would_alone(run_train):
    """Each seed's penalty is its own (float32, 12 steps, Adam): measured 3.1e-8 .. 4.4e-8 over both seeds with 1
    and 2 threads on the 2-core Xeon; bound 1e-5, as the other ensemble tests', 230x that."""
    recipe = (*SMALL, *PENALTY, "optimizer=adam", "lr=1e-3", "max_steps=12", "model=gcnn")
    together = run_train(*recipe, "seeds=2")
    for seed in (0, 1):
        alone = run_train(*recipe, f"seed={seed}")
        assert rel(Run(together.dir / f"seed={seed}").weights(), alone.weights()) <= 1e-5


@pytest.mark.slow
def test_an_augfn_run_stopped_and_resumed_is_bitwise_identical(run_train):
    recipe = (*SMALL, *PENALTY, "optimizer=momentum", "epochs=2", "model=p4cnn", "model.channels=[2,2,2,2,2,2]")
    reference = run_train(*recipe)
    stopped = run_train(*recipe, "max_steps=9")
    run_train(*recipe, f"resume={stopped.dir}", "force_resume=true")
    resumed = Run(stopped.dir)
    assert all(torch.equal(a, b) for a, b in zip(resumed.weights(), reference.weights()))
    assert scalars(resumed.dir)["loss/function"] == scalars(reference.dir)["loss/function"]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (("gamma_f=-1",), "gamma_f=-1.0 is not valid: use a finite number >= 0"),
        (("gamma_f_layers=[conv3]",), "gamma_f_layers.0='conv3' is not valid: use names of conv1, conv2, logits"),
        (("gamma_f_layers=[]",), "gamma_f_layers=[] is not valid: name at least one of conv1, conv2, logits"),
        (("gamma_f_layers=[logits,logits]",), "is not valid: name each layer once"),
    ],
)
def test_bad_function_penalty_values_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, overrides, message):
    code, err = cli(tmp_path, monkeypatch, capsys, *SMALL, "mode=augfn", *overrides)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_summaries_name_the_strength_of_the_runs_regularizer():
    from eqtrain.cli.summary import strength

    assert strength({"mode": "augfn", "gamma": 0.0, "gamma_f": 10.0}) == "gamma_f=10"
    assert strength({"mode": "augreg", "gamma": 0.1, "gamma_f": 0.0}) == "gamma=0.1"
    assert strength({"mode": "nominal", "gamma": 0.0}) == "gamma=0"  # a run of an older version: no gamma_f
