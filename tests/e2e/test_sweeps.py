"""Presets, the twin, launchers and the Optuna search (paper reproduction issue)."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from eqtrain.run.signals import StopSignals

from ..helpers import TINY, make_config

EQTRAIN = str(Path(sys.executable).parent / "eqtrain")
FEW = ["experiment=smoke", "max_steps=4"]


def sweep(tmp_path: Path, *args: str, timeout: float = 240) -> list[dict]:
    proc = subprocess.run(
        [EQTRAIN, "-m", *args, f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").rglob("metrics.json"))]


# -- presets ------------------------------------------------------------------------------------


def test_paper_preset_is_the_reference_experiment():
    cfg = make_config("experiment=paper")
    assert (cfg.dataset.name, cfg.model.name, cfg.group.name) == ("mnist", "paper_cnn", "c4")
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.augment) == (1e-3, 10, 10, "random")
    assert cfg.dataset.shuffle is False and cfg.init.scheme == "reference" and cfg.init.sigma == 1e-3
    assert cfg.data_scale == pytest.approx(0.1)  # SPEC §8: CE_mean / batch_size
    assert make_config("experiment=paper", "batch_size=20").data_scale == pytest.approx(0.05)
    assert list(cfg.model.channels) == [16, 16] and cfg.model.kernel_size == 3 and cfg.model.layernorm


def test_paper_preset_runs_offline_on_digits_with_the_reference_objective(run_train):
    run = run_train("experiment=paper", "dataset=digits", "dataset.train_limit=100", "max_steps=5", "gamma=2")
    assert run.metrics()["hparams"]["data_scale"] == pytest.approx(0.1)
    _, data = run.scalars("loss/data")
    _, reg = run.scalars("loss/reg")
    _, total = run.scalars("loss/total")
    assert all(t == pytest.approx(d / 10 + r, rel=1e-5) for d, r, t in zip(data, reg, total))


def test_named_sweeps_compose():
    with initialize_config_module(config_module="eqtrain.configs", version_base="1.3"):
        cfg = compose("config", ["experiment=paper", "sweep=paper_gammas"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params.mode == "nomreg,augreg,equivariant" and params.gamma == "0.01,0.1,1,10"
    assert cfg.seeds == 30 and "seed" not in params  # the 30 seeds of a job are one batched run
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and "GridSweeper" in cfg.hydra.sweeper._target_


@pytest.mark.slow
def test_stability_preset_switches_phase_with_continuous_weights(run_train):
    """Phase 1 equivariant, phase 2 orbit-augmented from exactly those weights (SPEC §8, §5.2).

    An equivariant twin trained on the same batches equals the model exactly through phase 1;
    if the switch did not carry A over, twin/dist would jump at the first step of phase 2.
    """
    steps_per_epoch = 10
    run = run_train(
        "experiment=stability", "dataset=digits", *TINY, "batch_size=10", "model.channels=[8,8,8]",
        "phases.0.epochs=1", "phases.1.epochs=1", "twin=true", "dtype=float64",
    )  # fmt: skip
    steps, twin = run.scalars("twin/dist")
    assert steps == list(range(2 * steps_per_epoch))
    assert max(twin[: steps_per_epoch + 1]) == 0.0  # identical up to and including the switch
    assert max(twin) < 1e-10  # and SPEC §5.2 afterwards (compatible support)
    _, rel = run.scalars("dist_to_E_rel/total")
    assert max(rel) < 1e-12
    assert run.metrics()["hparams"]["mode"] == "equivariant>augmented"


@pytest.mark.slow
def test_stability_preset_with_skewed_support_leaves_e_in_phase_two(run_train):
    run = run_train(
        "experiment=stability", "dataset=digits", *TINY, "batch_size=10", "model.channels=[8,8,8]", "model.support=skewed",
        "phases.0.epochs=1", "phases.1.epochs=1",
    )  # fmt: skip
    _, rel = run.scalars("dist_to_E_rel/total")
    assert max(rel[:10]) < 1e-6 and rel[-1] > 1e-3  # on E while equivariant, off E after (SPEC §5.5)


# -- the twin -----------------------------------------------------------------------------------


def test_twin_of_an_equivariant_run_is_itself(run_train):
    _, twin = run_train(*TINY, "mode=equivariant", "twin=true", "max_steps=10").scalars("twin/dist")
    assert twin == [0.0] * 10


def test_twin_tracks_orbit_augmented_training_from_e(run_train):
    """SPEC §5.2 over a short horizon in float64 (the dynamics amplify round-off)."""
    run = run_train(
        *TINY,
        "mode=augmented",
        "augment=orbit",
        "init.scheme=perturbed_equivariant",
        "init.sigma=0",
        "twin=true",
        "max_steps=30",
        "lr=0.01",
        "dtype=float64",
    )
    _, twin = run.scalars("twin/dist")
    assert max(twin) < 1e-12


def test_twin_separates_from_nominal_training(run_train):
    _, twin = run_train(
        *TINY, "mode=nominal", "init.scheme=perturbed_equivariant", "init.sigma=0", "twin=true", "max_steps=10"
    ).scalars("twin/dist")
    assert twin[0] == 0.0 and twin[-1] > 1e-3


# -- launchers and search ----------------------------------------------------------------------


@pytest.mark.slow
def test_joblib_sweep_runs_every_job_with_threads_per_job(tmp_path):
    results = sweep(tmp_path, *FEW, "hydra/launcher=parallel", "mode=nomreg,augreg", "gamma=0.1,1")
    assert len(results) == 4 and all(r["status"] == "completed" for r in results)
    assert sorted({(r["hparams"]["mode"], r["hparams"]["gamma"]) for r in results}) == [
        ("augreg", 0.1), ("augreg", 1.0), ("nomreg", 0.1), ("nomreg", 1.0),
    ]  # fmt: skip
    threads = {p.read_text().split("threads: ")[1].split()[0] for p in (tmp_path / "sweep").glob("*/config.yaml")}
    assert threads == {str(max(1, (os.cpu_count() or 1) // 2))}
    names = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert names[0] == "0_gamma=0.1,max_steps=4,mode=nomreg"  # job directories named by overrides


@pytest.mark.slow
def test_submitit_local_runs_a_job_that_resumes_by_default(tmp_path):
    (result,) = sweep(tmp_path, *FEW, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5")
    assert result["status"] == "completed"
    (config,) = (tmp_path / "sweep").glob("*/config.yaml")
    assert "resume: auto" in config.read_text()


@pytest.mark.slow
def test_optuna_searches_gamma_and_returns_the_objective(tmp_path):
    proc = subprocess.run(
        [EQTRAIN, "hparams_search=gamma_optuna", *FEW, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path}/s"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = (tmp_path / "s" / "optimization_results.yaml").read_text()
    assert "best_params:" in best and "gamma:" in best
    runs = [json.loads(p.read_text()) for p in (tmp_path / "s").rglob("metrics.json")]
    assert len(runs) == 2
    value = float(best.split("best_value:")[1].split()[0])
    scores = [r["acc/test_orbit"] - (0 if r["dist_to_E_rel/total"] <= 0.05 else 1) for r in runs]
    assert math.isclose(value, max(scores), rel_tol=1e-9)


def test_stop_signal_hands_over_to_the_previous_handler_after_the_checkpoint():
    """Under submitit, SIGUSR2 must reach submitit's own handler (which requeues the job)."""
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda s, f: calls.append(s))
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert stop.requested and calls == []  # only the flag while the loop checkpoints
            with pytest.raises(SystemExit) as exc:
                stop.hand_over()
        assert calls == [signal.SIGUSR2] and exc.value.code == 128 + signal.SIGUSR2
    finally:
        signal.signal(signal.SIGUSR2, previous)


@pytest.mark.slow
def test_checkpoints_load_weights_only(run_train):
    run = run_train(*TINY, "max_steps=3")
    state = torch.load(run.dir / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and isinstance(state["config_hash"], str)


def test_a_phase_switch_keeps_weights_and_biases(run_train):
    """Two phases of the same mode equal one run of both epochs: the switch carries A and the biases."""
    phased = run_train(*TINY, "model.bias=true", "+phases=[{mode:nominal,epochs:1},{mode:nominal,epochs:1}]")
    plain = run_train(*TINY, "model.bias=true", "mode=nominal", "epochs=2")
    a, b = (torch.load(r.dir / "weights.pt", weights_only=True)["state_dict"] for r in (phased, plain))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(a[f"biases.{i}"].abs().max() > 0 for i in range(3))  # the biases did train


def test_analyze_restores_a_run_that_ended_inside_a_phase(tmp_path):
    from eqtrain.training.finished_run import restore

    from ..helpers import train_config as train

    train(
        make_config(*TINY, "+phases=[{mode:equivariant,epochs:1},{mode:augmented,epochs:1}]", "max_steps=3"), tmp_path
    )
    restored = restore(tmp_path)
    saved = torch.load(tmp_path / "weights.pt", weights_only=True)["weights"]
    assert all(torch.allclose(a[0], b) for a, b in zip(restored.model.weights(), saved))


def test_paper_preset_runs_on_mnist_files(run_train, tmp_path):
    """experiment=paper as written (MNIST from data_dir), on tiny IDX files written here."""
    from ..helpers import make_mnist

    make_mnist(tmp_path / "mnist", n_train=40, n_test=20)
    run = run_train("experiment=paper", f"dataset.data_dir={tmp_path / 'mnist'}", "max_steps=4", "mode=nomreg")
    m = run.metrics()
    assert m["status"] == "completed" and m["hparams"]["dataset"] == "mnist" and m["steps"] == 4


def test_restore_is_exact_for_the_basis_parametrization(tmp_path):
    from eqtrain.training.finished_run import restore

    from ..helpers import train_config as train

    train(make_config(*TINY, "model.parametrization=basis", "model.support=cross", "max_steps=3"), tmp_path)
    saved = torch.load(tmp_path / "weights.pt", weights_only=True)["weights"]
    assert all(torch.equal(a[0], b) for a, b in zip(restore(tmp_path).model.weights(), saved))


@pytest.mark.slow
def test_paper_sweep_is_nine_jobs_of_all_seeds_and_plots(tmp_path):
    """sweep=paper_gammas: one job per (mode, γ) holding every seed, the equivariant model once; the
    figure and the table read the per-seed run directories of those jobs."""
    from eqtrain.cli.plot import main as plot

    runs = sweep(tmp_path, "experiment=paper", "dataset=digits", "sweep=paper_gammas", "seeds=2", "max_steps=2",
                 "dataset.train_limit=40", "dataset.test_limit=20")  # fmt: skip
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(jobs) == 9 and sum("mode=equivariant" in j for j in jobs) == 1
    assert len(runs) == 18  # 9 jobs x 2 seeds
    assert plot([str(tmp_path / "sweep")]) == 0
    table = (tmp_path / "sweep" / "summary.md").read_text()
    assert table.count("| equivariant |") == 1 and table.count("| augreg |") == 4 and table.count("| nomreg |") == 4


def test_accuracy_study_preset_composes():
    """SPEC §10: one sweep on the same data and seeds, the paper CNN on digits, 10 seeds per job."""
    with initialize_config_module(config_module="eqtrain.configs", version_base="1.3"):
        cfg = compose("config", ["experiment=accuracy_study"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params.mode == "equivariant,augmented,nominal,augreg" and params.gamma == "0.01,0.1,1,10"
    assert params.gamma_schedule == "constant,exp" and "GridSweeper" in cfg.hydra.sweeper._target_
    assert (cfg.dataset.name, cfg.model.name, cfg.seeds, cfg.epochs, cfg.lr) == ("digits", "paper_cnn", 10, 12, 0.05)
    assert (cfg.gamma_start, cfg.gamma_ramp_epochs) == (0.001, 6)


@pytest.mark.slow
def test_accuracy_study_runs_end_to_end_and_plots_against_gamma(tmp_path):
    """The study on a tiny budget: 11 jobs (the γ-free modes once, augreg at 4 γ constant and ramped),
    then eqtrain-plot --vs gamma reads them all back."""
    from eqtrain.cli.plot import main as plot

    runs = sweep(tmp_path, "experiment=accuracy_study", "seeds=2", "max_steps=2", "dataset.train_limit=40",
                 "dataset.test_limit=20")  # fmt: skip
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(jobs) == 11 and len(runs) == 22  # 3 modes without γ + 4 γ x 2 schedules, 2 seeds each
    assert sum("mode=augreg" in j for j in jobs) == 8
    assert plot([str(tmp_path / "sweep"), "--vs", "gamma"]) == 0
    with (tmp_path / "sweep" / "vs_gamma_acc_test_orbit.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 11 and all(row["n"] == "2" for row in rows)


@pytest.mark.slow
def test_a_job_stopped_by_a_user_error_ends_the_sweep_in_one_line_without_a_traceback(tmp_path):
    """Every job runs and logs its error; the sweep then exits non-zero naming the job, without a traceback."""
    proc = subprocess.run(
        [EQTRAIN, "-m", *FEW, "model=gcnn", "init.scheme=reference", "mode=augreg,nomreg", f"hydra.sweep.dir={tmp_path}/s"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode != 0
    assert proc.stdout.count("[eqtrain][ERROR] - init.scheme='reference' is not valid") == 2  # both jobs ran
    assert "Error executing job with overrides" in proc.stderr and "eqtrain: error: init.scheme=" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
