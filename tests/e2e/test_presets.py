"""Experiment presets compose and run: the paper's reference experiment, the named sweeps, the stability and accuracy studies."""

import csv

import pytest
from hydra import compose, initialize_config_module

from ..helpers import TINY, make_config, sweep


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


def test_paper_preset_runs_on_mnist_files(run_train, tmp_path):
    """experiment=paper as written (MNIST from data_dir), on tiny IDX files written here."""
    from ..helpers import make_mnist

    make_mnist(tmp_path / "mnist", n_train=40, n_test=20)
    run = run_train("experiment=paper", f"dataset.data_dir={tmp_path / 'mnist'}", "max_steps=4", "mode=nomreg")
    m = run.metrics()
    assert m["status"] == "completed" and m["hparams"]["dataset"] == "mnist" and m["steps"] == 4


def test_named_sweeps_compose():
    with initialize_config_module(config_module="eqtrain.configs", version_base="1.3"):
        cfg = compose("config", ["experiment=paper", "sweep=paper_gammas"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params.mode == "nomreg,augreg,equivariant" and params.gamma == "0.01,0.1,1,10"
    assert cfg.seeds == 30 and "seed" not in params  # the 30 seeds of a job are one batched run
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and "GridSweeper" in cfg.hydra.sweeper._target_


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


@pytest.mark.slow  # a sweep of 4 jobs in a subprocess (~5 s)
def test_a_sweep_names_its_jobs_and_compares_their_hparams_by_what_differs(tmp_path):
    """`eqtrain -m` (the grid sweeper) on a sweep with budget overrides: directories named by mode and γ only, and TensorBoard's HParams
    table marks mode, γ and seed (and the preset's group and model), not the budget every job shares."""
    import json

    sweep(
        tmp_path, "mode=augreg,nomreg", "gamma=0.1,10", "seeds=2", "epochs=1",
        "dataset.train_limit=60", "dataset.test_limit=20",
    )  # fmt: skip
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == [
        "0_gamma=0.1,mode=augreg",
        "1_gamma=10,mode=augreg",
        "2_gamma=0.1,mode=nomreg",
        "3_gamma=10,mode=nomreg",
    ]
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    (events,) = (tmp_path / "sweep" / jobs[0] / "seed=1").glob("events.out.tfevents.*")
    (content,) = [
        v.metadata.plugin_data.content
        for e in EventFileLoader(str(events)).Load()
        for v in e.summary.value
        if v.tag == "_hparams_/experiment"
    ]
    infos = HParamsPluginData.FromString(content).experiment.hparam_infos
    assert {i.name for i in infos if i.differs} == {"gamma", "mode", "seed", "group", "model"}
    assert json.loads((tmp_path / "sweep" / jobs[0] / "seed=1" / "metrics.json").read_text())["status"] == "completed"
