"""experiment=rotmnist_recipe_study (SPEC §10 at the scale of §11, under the recipes of §12, against the
function-space penalty): its 9 jobs and recipe, the recipe search on a validation split, and a tiny
end-to-end sweep on IDX files the test writes."""

import csv
import json
import subprocess

import pytest
from omegaconf import open_dict

from ..helpers import EQTRAIN, make_mnist
from .test_rotmnist_study import jobs_of
from .test_rotmnist_study import study as compose_study


def study(*overrides: str):
    return compose_study(*overrides, experiment="rotmnist_recipe_study")


def described(job: list[str]) -> tuple[str, str]:
    values = dict(o.split("=", 1) for o in job)
    mode = values["mode"]
    if mode == "augreg":
        mode += f" gamma={values['gamma']}"
    if mode == "augfn":
        mode += f" gamma_f={values['gamma_f']}"
    return values["model"], mode


def test_the_preset_is_nine_jobs_under_adam_at_batch_32():
    cfg = study()
    assert (cfg.dataset.name, cfg.dataset.rotate, cfg.model.name) == ("mnist", "continuous", "p4cnn")
    assert (cfg.optimizer.name, cfg.lr, cfg.batch_size, cfg.lr_schedule, cfg.lr_decay) == (
        "adam",
        1e-3,
        32,
        "exp",
        0.95,
    )
    assert (cfg.model.bn_stats, cfg.model.bn_affine, cfg.seeds, list(cfg.gamma_f_layers)) == (
        "running",
        True,
        5,
        ["logits"],
    )
    jobs = sorted(described(job) for job in jobs_of(cfg))
    assert jobs == sorted(
        [("p4cnn", m) for m in ("equivariant", "augmented", "augfn gamma_f=1", "augfn gamma_f=10")]
        + [("p4cnn", f"augreg gamma={g}") for g in ("0.1", "1", "10")]
        + [("z2cnn", "augmented"), ("z2cnn", "nominal")]
    )


def test_a_recipe_on_the_command_line_replaces_the_presets():
    cfg = study("recipe=momentum_cosine")
    assert (cfg.optimizer.name, cfg.optimizer.momentum, cfg.lr, cfg.lr_schedule) == ("sgd", 0.9, 0.02, "cosine")
    assert (cfg.weight_decay, cfg.batch_size, cfg.model.bn_stats) == (5e-4, 32, "running")


def test_the_recipe_search_holds_out_a_validation_split_and_compares_three_recipes():
    cfg = compose_study(experiment="rotmnist_recipe_search")
    assert cfg.dataset.validation == 2000
    jobs = {tuple(sorted(job)) for job in jobs_of(cfg)}
    assert len(jobs) == 6
    assert {dict(o.split("=", 1) for o in job)["recipe"] for job in jobs} == {
        "cohen_welling", "adam_b32", "momentum_cosine"
    }  # fmt: skip


def test_the_slurm_recipe_composes_with_mnist_rot():
    """README's command for a cluster: the same 9 jobs, each a SLURM job, on MNIST-rot's files."""
    cfg = study(
        "dataset=mnist_rot", "dataset.data_dir=/data/mnist_rot", "seeds=10", "epochs=30", "hydra/launcher=slurm",
        "hydra.launcher.gpus_per_node=1", "device=cuda", "hydra.sweep.dir=/scratch/rs",
    )  # fmt: skip
    assert "SlurmLauncher" in cfg.hydra.launcher._target_ and cfg.device == "cuda"
    assert (cfg.dataset.name, cfg.seeds, cfg.epochs, cfg.optimizer.name) == ("mnist_rot", 10, 30, "adam")
    assert len(jobs_of(cfg)) == 9


def test_the_second_recipes_contrasts_are_one_command():
    """docs/studies.md's command for the key contrasts under recipe=momentum_cosine: five jobs."""
    cfg = study("recipe=momentum_cosine")
    swept = {"mode": "equivariant,augmented,augreg,augfn", "gamma": "10", "gamma_f": "1"}  # the command line's
    with open_dict(cfg):
        cfg.hydra.sweeper.params.update(swept)  # as Hydra merges a sweep's command line over the preset's params
    jobs = sorted(described(job) for job in jobs_of(cfg))
    assert jobs == sorted(
        [("p4cnn", "equivariant"), ("p4cnn", "augmented"), ("p4cnn", "augreg gamma=10"), ("p4cnn", "augfn gamma_f=1")]
        + [("z2cnn", "augmented")]
    )


def test_the_whole_grid_under_the_searchs_recipe_is_one_command():
    """README's command for the search's choice: the same 9 jobs, every one with momentum_cosine's keys (the
    preset's Adam values replaced, its x0.95 decay unread by the cosine)."""
    cfg = study("recipe=momentum_cosine", "seeds=5", "epochs=8")
    assert len(jobs_of(cfg)) == 9 and (cfg.seeds, cfg.epochs) == (5, 8)
    assert (cfg.optimizer.name, cfg.optimizer.momentum, cfg.lr, cfg.lr_schedule, cfg.lr_warmup_epochs) == (
        "sgd", 0.9, 0.02, "cosine", 1.0,
    )  # fmt: skip
    assert (cfg.weight_decay, cfg.batch_size, cfg.model.bn_stats, cfg.model.bn_affine) == (5e-4, 32, "running", True)


@pytest.mark.slow
def test_the_study_runs_end_to_end(tmp_path):
    """The preset's sweep, cut to three of its jobs (the equivariant P4CNN and augfn at both γ_f), and its figure."""
    make_mnist(tmp_path / "data", n_train=40, n_test=10)
    args = ["experiment=rotmnist_recipe_study", f"dataset.data_dir={tmp_path / 'data'}", "seeds=2", "max_steps=2"]
    args += ["model.channels=[2,2,2,2,2,2]", "batch_size=8", "mode=equivariant,augfn"]
    proc = subprocess.run(
        [EQTRAIN, *args, f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in (tmp_path / "sweep").rglob("metrics.json")]
    assert len(runs) == 6 and all(r["status"] == "completed" for r in runs)  # 3 jobs x 2 seeds
    augfn = [r for r in runs if r["hparams"]["mode"] == "augfn"]
    assert {r["hparams"]["gamma_f"] for r in augfn} == {1.0, 10.0} and len(augfn) == 4
    assert all(r["hparams"]["optimizer"] == "adam" and r["hparams"]["bn_stats"] == "running" for r in runs)
    from eqtrain.cli.plot import main as plot

    assert plot([str(tmp_path / "sweep"), "--vs", "gamma", "--metric", "acc/test,dist_to_E_rel/total"]) == 0
    with (tmp_path / "sweep" / "vs_gamma_panels.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(row["n"] == "2" for row in rows)  # augfn's two γ_f are two rows, as augreg's γ
    assert sorted(float(row["gamma"]) for row in rows if row["mode"] == "augfn") == [1.0, 10.0]
