"""The field's training recipes end to end (SPEC §12): the config group, the preset, resume, ensembles, bad values."""

import signal
import subprocess

import pytest
import torch

from ..helpers import EQTRAIN, Run, cli, fast_first, kill_and_resume, make_config, rel, scalars, sweep, wait_for

SMALL = ("dataset.train_limit=100", "dataset.test_limit=30", "batch_size=10", "mode=augreg", "gamma=1")

# Every optimizer with a schedule that does not depend on the run's length (a run stopped by max_steps has
# another length; the cosine schedule is resumed after a kill below).
MOMENTUM_TWIN = ("optimizer=momentum", "weight_decay=1e-3", "lr_schedule=step", "lr_step_epochs=1", "twin=true")
RESUMABLE = {  # overrides -> the optimizer's updates in the checkpoint at step 15
    "momentum_twin": ((*MOMENTUM_TWIN, "lr_warmup_epochs=0.5"), 15),
    "nesterov": (("optimizer=nesterov", "optimizer.decoupled=true", "weight_decay=1e-3"), 15),
    "adam": (("optimizer=adam", "lr=1e-3", "weight_decay=1e-3", "lr_schedule=exp", "lr_decay=0.5"), 15),
    "adamw_equivariant": (("optimizer=adamw", "lr=1e-3", "weight_decay=1e-2", "mode=equivariant"), 15),
    # phases: the state goes on across a switch within L, and starts afresh where θ becomes E's coordinates
    "adam_phases_in_l": (
        ("optimizer=adam", "lr=1e-3", "+phases=[{mode: augmented, epochs: 1, augment: orbit}, {mode: augreg, epochs: 1}]"),
        15,
    ),
    "adam_phases_into_e": (
        ("optimizer=adam", "lr=1e-3", "+phases=[{mode: augreg, epochs: 1}, {mode: equivariant, epochs: 1}]"),
        5,
    ),
    # a P4CNN trained with the running statistics and the affine of its batch norms (SPEC §12)
    "p4cnn_cohen_welling": (
        ("model=p4cnn", "model.channels=[2,2,2,2,2,2]", "recipe=cohen_welling", "batch_size=10", "model.bn_affine=true"),
        15,
    ),
}  # fmt: skip


@pytest.mark.parametrize("recipe,updates", fast_first(RESUMABLE.values(), ids=list(RESUMABLE)))
def test_a_run_stopped_and_resumed_is_bitwise_identical_with_every_optimizer(run_train, recipe, updates):
    """Stopped after 15 steps (mid-epoch 2: the checkpoint holds the optimizer state) and resumed: the same
    weights and the same curves as an uninterrupted run (SPEC §12: the state is checkpointed)."""
    reference = run_train(*SMALL, *recipe, "epochs=2")
    stopped = run_train(*SMALL, *recipe, "epochs=2", "max_steps=15")
    assert torch.load(stopped.dir / "checkpoint.pt", weights_only=True)["optimizer"]["steps"] == updates
    run_train(*SMALL, *recipe, "epochs=2", f"resume={stopped.dir}", "force_resume=true")
    resumed = Run(stopped.dir)
    assert resumed.metrics()["steps"] == reference.metrics()["steps"] == 20
    assert all(torch.equal(a, b) for a, b in zip(resumed.weights(), reference.weights()))
    assert scalars(resumed.dir)["loss/data"] == scalars(reference.dir)["loss/data"]


@pytest.mark.slow
def test_an_adam_ensemble_with_a_cosine_schedule_killed_and_resumed_is_bitwise_identical(tmp_path):
    args = [
        "dataset.train_limit=300", "dataset.test_limit=30", "epochs=2", "batch_size=1", "mode=augreg",
        "optimizer=adam", "lr=1e-3", "lr_schedule=cosine", "lr_warmup_epochs=0.5", "seeds=2",
    ]  # fmt: skip
    reference, killed = kill_and_resume(tmp_path, args, steps_per_epoch=300)
    for seed in (0, 1):
        ref, resumed = reference / f"seed={seed}", killed / f"seed={seed}"
        assert (resumed / "metrics.json").read_text() == (ref / "metrics.json").read_text()
        assert scalars(resumed) == scalars(ref)


def test_running_statistics_follow_training_and_are_what_evaluation_uses(run_train):
    """With model.bn_stats=running the training steps move the statistics off their start (mean 0, var 1); the
    checkpoint holds them, and evaluating the saved model with them gives the run's final acc/test."""
    from eqtrain.geometry.group import Group
    from eqtrain.nets.cnn import build_model
    from eqtrain.training.metrics import evaluate

    overrides = ("model=p4cnn", "model.channels=[2,2,2,2,2,2]", "recipe=cohen_welling", "batch_size=10")
    run = run_train(*overrides, "dataset.train_limit=100", "dataset.test_limit=30", "epochs=1")
    cfg = make_config(*overrides)
    model = build_model(cfg.model, Group.from_name("c4"), (1, 28, 28), 10, False)
    start = model.norm_stats.clone()
    model.load_state_dict(torch.load(run.dir / "checkpoint.pt", weights_only=True)["model"])
    assert start.shape == model.norm_stats.shape == (1, 2 * 2 * 6)  # a mean and a variance per field and layer
    assert (model.norm_stats - start).abs().min() > 1e-4  # every statistic moved
    from eqtrain.data.datasets import load_dataset
    from eqtrain.schema import DatasetConfig

    data = load_dataset(DatasetConfig(train_limit=100, test_limit=30))
    assert evaluate(model, data, Group.from_name("c4"))[0]["acc/test"] == run.metrics()["acc/test"]


@pytest.mark.slow
def test_a_momentum_run_killed_without_warning_resumes_bitwise_from_its_last_checkpoint(tmp_path):
    """SIGKILL (no handler runs, the optimizer state on disk is the last epoch's checkpoint): resume=true
    replays from there and ends with the weights and final metrics of an uninterrupted run."""
    args = [
        "dataset.train_limit=300", "dataset.test_limit=30", "epochs=2", "batch_size=1", "mode=augreg",
        "optimizer=nesterov", "weight_decay=1e-3", "lr_schedule=cosine",
    ]  # fmt: skip
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run([EQTRAIN, *args, f"hydra.run.dir={reference}"], cwd=tmp_path, check=True, capture_output=True)
    proc = subprocess.Popen([EQTRAIN, *args, f"hydra.run.dir={killed}"], cwd=tmp_path, stderr=subprocess.PIPE)
    wait_for(killed / "checkpoint.pt", proc)  # the first epoch's: now in epoch 2
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    subprocess.run([EQTRAIN, *args, f"hydra.run.dir={killed}", "resume=true"], cwd=tmp_path, check=True)
    assert all(torch.equal(a, b) for a, b in zip(Run(killed).weights(), Run(reference).weights()))
    final = ("acc/test", "acc/test_orbit", "dist_to_E/total", "steps")
    assert [Run(killed).metrics()[k] for k in final] == [Run(reference).metrics()[k] for k in final]


def test_every_seed_of_an_adam_ensemble_trains_as_it_would_alone(run_train):
    """Each seed's Adam moments are its own: seeds=2 gives each seed the weights of its own run, up to the
    round-off of the grouped convolutions (float32, 15 steps: 3.9e-8 .. 4.7e-8 measured over both seeds with
    1 and 2 threads on the 2-core Xeon; bound 1e-5, as the plain-SGD ensemble test's, 200x that)."""
    recipe = (*SMALL, "optimizer=adam", "lr=1e-3", "weight_decay=1e-3", "max_steps=15")
    together = run_train(*recipe, "seeds=2")
    for seed in (0, 1):
        alone = run_train(*recipe, f"seed={seed}")
        assert rel(Run(together.dir / f"seed={seed}").weights(), alone.weights()) <= 1e-5
    assert rel(Run(together.dir / "seed=0").weights(), Run(together.dir / "seed=1").weights()) > 1e-2


def test_the_recipe_the_optimizer_and_the_coordinates_are_in_the_hparams_and_the_log(run_train, caplog):
    caplog.set_level("INFO", logger="eqtrain")
    run = run_train(*SMALL, "optimizer=adam", "lr=1e-3", "lr_schedule=cosine", "max_steps=4", "twin=true")
    hparams = run.metrics()["hparams"]
    assert (hparams["optimizer"], hparams["lr_schedule"], hparams["coordinates"]) == ("adam", "cosine", "tied")
    assert "equivariant coordinates: tied (model.equivariant_coordinates=auto)" in caplog.text
    assert "optimizer: adam (betas 0.9, 0.999, eps 1e-08), lr 0.001, lr_schedule=cosine" in caplog.text
    steps, rates = run.scalars("lr/t")
    assert steps == [0, 1, 2, 3] and rates[0] == pytest.approx(1e-3) and rates[3] == pytest.approx(0.0, abs=1e-12)


def test_the_cohen_welling_recipe_is_one_word_away():
    cfg = make_config("model=p4cnn", "recipe=cohen_welling")
    assert (cfg.optimizer.name, cfg.lr, cfg.batch_size, cfg.lr_schedule) == ("adam", 1e-3, 128, "exp")
    assert cfg.model.bn_stats == "running" and cfg.model.name == "p4cnn"
    assert make_config("experiment=rotmnist_study", "recipe=cohen_welling").batch_size == 128  # over the preset's 10


@pytest.mark.slow
def test_a_sweep_over_optimizers(tmp_path):
    """The issue's command at a tiny budget: 3 optimizers x 2 gammas, each job an ensemble."""
    runs = sweep(
        tmp_path, "optimizer=sgd,momentum,adam", "mode=augreg", "gamma=1,10", "seeds=2",
        "dataset.train_limit=40", "dataset.test_limit=20", "epochs=1",
    )  # fmt: skip
    assert len(runs) == 6 * 2  # every seed's own metrics.json
    assert {r["status"] for r in runs} == {"completed"}


@pytest.mark.parametrize(
    "change,message",
    [
        (("optimizer=adam", "model.equivariant_coordinates=orthonormal"), "optimizer.name=sgd (here adam)"),
        (
            ("model.equivariant_coordinates=tied",),
            "the checkpoint's θ are E's orthonormal coordinates, this run's E's tied",
        ),
        (("model.bn_affine=true",), "the checkpoint's model does not fit this config (Missing key(s)"),
    ],
)
def test_force_resume_refuses_in_one_line_what_it_cannot_carry_over(tmp_path, monkeypatch, capsys, change, message):
    """force_resume may change training keys; another optimizer state, E's coordinates or the model's tensors
    cannot be carried over: one line, exit 2, and the run directory left as it was."""
    base = ("experiment=smoke", "max_steps=3", "mode=equivariant", "optimizer=momentum", "model=p4cnn",
            "model.channels=[2,2,2,2,2,2]", "model.norm=batchnorm", "dataset.image_size=28")  # fmt: skip
    run = tmp_path / "run"
    assert cli(tmp_path, monkeypatch, capsys, *base, f"hydra.run.dir={run}")[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code, err = cli(tmp_path, monkeypatch, capsys, *base, *change, "max_steps=6", f"resume={run}", "force_resume=true")
    assert code == 2 and message in err
    assert err.strip().count("\n") == 0 and err.startswith("eqtrain: error: resume: ")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


BAD_RECIPES = [
    (["optimizer.name=rmsprop"], "optimizer.name='rmsprop' is not valid: use one of sgd, adam, adamw"),
    (
        ["optimizer=rmsprop"],
        "optimizer=rmsprop is not an option of optimizer; valid: adam, adamw, momentum, nesterov, sgd",
    ),
    (["optimizer.momentum=1"], "optimizer.momentum=1.0 is not valid: use a number in [0, 1)"),
    (
        ["optimizer=adam", "optimizer.momentum=0.9"],
        "optimizer.momentum=0.9 is not valid: optimizer.name=adam has betas",
    ),
    (["optimizer.nesterov=true"], "optimizer.nesterov=True is not valid: Nesterov needs optimizer.momentum > 0"),
    (["optimizer.betas=[0.9]"], "optimizer.betas=[0.9] is not valid: use two numbers in [0, 1)"),
    (["optimizer.betas=[0.9,1.0]"], "optimizer.betas=[0.9, 1.0] is not valid"),
    (["optimizer.eps=0"], "optimizer.eps=0.0 is not valid: use a finite number > 0"),
    (["optimizer=adamw", "optimizer.decoupled=false"], "optimizer.decoupled=False is not valid: adamw's weight decay"),
    (["weight_decay=-1"], "weight_decay=-1.0 is not valid: use a finite number >= 0"),
    (["weight_decay=nan"], "weight_decay=nan is not valid"),
    (["optimizer=adamw", "lr=0.1", "weight_decay=10"], "weight_decay=10.0 is not valid: a decoupled decay"),
    (["lr_schedule=linear"], "lr_schedule='linear' is not valid: use one of constant, step, exp, cosine"),
    (["lr_decay=0"], "lr_decay=0.0 is not valid: use a number in (0, 1] or null (step: 0.1, exp: 0.9)"),
    (["lr_decay=1.5"], "lr_decay=1.5 is not valid"),
    (["lr_step_epochs=0"], "lr_step_epochs=0 is not valid: use an int >= 1"),
    (["lr_min=1"], "lr_min=1.0 is not valid: use a number in [0, lr=0.02]"),
    (["lr_warmup_epochs=-1"], "lr_warmup_epochs=-1.0 is not valid: use a number >= 0"),
    (["model.equivariant_coordinates=basis"], "model.equivariant_coordinates='basis' is not valid: use one of auto"),
]


@pytest.mark.parametrize(
    "overrides,message", fast_first(BAD_RECIPES, fast=3, ids=[" ".join(o) for o, _ in BAD_RECIPES])
)
def test_bad_recipe_values_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, overrides, message):
    code, err = cli(tmp_path, monkeypatch, capsys, "experiment=smoke", "max_steps=3", *overrides)
    assert code == 2
    assert message in err
    assert err.strip().count("\n") == 0 and err.startswith("eqtrain: error: ")
    assert not list(tmp_path.rglob("events.out.tfevents.*"))
