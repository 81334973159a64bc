"""Launchers and searches: joblib, submitit (local), the Optuna search over gamma, and a sweep whose job stops on a user error."""

import json
import math
import os
import signal
import subprocess

import pytest

from eqtrain.run.signals import StopSignals

from ..helpers import EQTRAIN, sweep

FEW = ["experiment=smoke", "max_steps=4"]


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
    assert names[0] == "0_gamma=0.1,mode=nomreg"  # named by what differs between the jobs (not max_steps=4)


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
