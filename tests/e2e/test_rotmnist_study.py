"""experiment=rotmnist_study (SPEC §10 at the scale of §11): its 13 jobs, a tiny end-to-end sweep on IDX
files the test writes, the figure against γ, and the SLURM recipe composing unchanged."""

import csv
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from eqtrain.cli.sweeper import without_repeats

from ..helpers import make_mnist

EQTRAIN = str(Path(sys.executable).parent / "eqtrain")
P4CNN_JOBS = {"equivariant", "augmented", "nominal"} | {
    f"augreg gamma={g} {s}" for g in ("0.01", "0.1", "1", "10") for s in ("constant", "exp")
}


def study(*overrides: str, experiment: str = "rotmnist_study"):
    with initialize_config_module(config_module="eqtrain.configs", version_base="1.3"):
        return compose("config", [f"experiment={experiment}", *overrides], return_hydra_config=True)


def jobs_of(cfg) -> list[list[str]]:
    """The grid of the preset's sweeper params, as the grid sweeper keeps it."""
    params = cfg.hydra.sweeper.params
    grid = itertools.product(*([f"{k}={v}" for v in str(values).split(",")] for k, values in params.items()))
    return without_repeats([list(job) for job in grid], cfg.mode.name, cfg.hydra.sweeper.exclude)


def described(job: list[str]) -> tuple[str, str]:
    values = dict(o.split("=", 1) for o in job)
    mode = values["mode"]
    if mode == "augreg":
        mode = f"augreg gamma={values['gamma']} {values['gamma_schedule']}"
    return values["model"], mode


def test_the_preset_is_p4cnn_against_z2cnn_on_rotated_mnist_in_13_jobs():
    cfg = study()
    assert (cfg.dataset.name, cfg.dataset.rotate, cfg.model.name, cfg.group.name) == (
        "mnist",
        "continuous",
        "p4cnn",
        "c4",
    )
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.seeds, cfg.augment) == (0.02, 10, 6, 3, "random")
    assert (cfg.gamma_start, cfg.gamma_ramp_epochs) == (0.001, 3)  # the ramp over the first half, as on digits
    jobs = [described(job) for job in jobs_of(cfg)]
    assert len(jobs) == 13 and len(set(jobs)) == 13
    assert {mode for model, mode in jobs if model == "p4cnn"} == P4CNN_JOBS
    assert sorted(mode for model, mode in jobs if model == "z2cnn") == ["augmented", "nominal"]


def test_the_slurm_recipe_composes_with_mnist_rot():
    """docs/studies.md's command for a cluster: the same 13 jobs, each a SLURM job, on MNIST-rot's files."""
    cfg = study(
        "dataset=mnist_rot", "dataset.data_dir=/data/mnist_rot", "seeds=10", "epochs=12", "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1", "device=cuda",
        "hydra.sweep.dir=/scratch/rotmnist_study",
    )  # fmt: skip
    assert "submitit" in cfg.hydra.launcher._target_ and "SlurmLauncher" in cfg.hydra.launcher._target_
    assert (cfg.hydra.launcher.partition, cfg.hydra.launcher.gpus_per_node, cfg.device) == ("gpu", 1, "cuda")
    assert (cfg.dataset.name, cfg.dataset.data_dir, cfg.seeds, cfg.epochs) == ("mnist_rot", "/data/mnist_rot", 10, 12)
    assert cfg.model.name == "p4cnn" and cfg.hydra.sweep.dir == "/scratch/rotmnist_study"
    assert len(jobs_of(cfg)) == 13


@pytest.mark.slow
def test_the_study_runs_end_to_end_and_plots_every_model_and_mode(tmp_path):
    make_mnist(tmp_path / "data", n_train=20, n_test=10)
    args = ["experiment=rotmnist_study", f"dataset.data_dir={tmp_path / 'data'}", "seeds=2", "max_steps=2"]
    proc = subprocess.run(
        [EQTRAIN, *args, f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in (tmp_path / "sweep").rglob("metrics.json")]
    assert len(runs) == 26 and all(r["status"] == "completed" for r in runs)  # 13 jobs x 2 seeds
    assert {r["hparams"]["model"] for r in runs} == {"p4cnn", "z2cnn"}
    assert all(r["hparams"]["rotate"].startswith("continuous") for r in runs)
    from eqtrain.cli.plot import main as plot

    metrics = "acc/test,acc/test_projected,dist_to_E_rel/total,equiv/layer/conv6"
    assert plot([str(tmp_path / "sweep"), "--vs", "gamma", "--metric", metrics]) == 0
    with (tmp_path / "sweep" / "vs_gamma_panels.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 13 and all(row["n"] == "2" for row in rows)
    assert {row["mode"] for row in rows if row["mode"].startswith("z2cnn")} == {"z2cnn augmented", "z2cnn nominal"}
    equivariant = next(row for row in rows if row["mode"] == "p4cnn equivariant")
    assert (
        float(equivariant["dist_to_E_rel/total median"]) == 0 and float(equivariant["equiv/layer/conv6 median"]) < 1e-5
    )
