"""The grid sweeper drops only the jobs that would repeat another exactly (γ means nothing without a regularizer)."""

import pytest

from eqtrain.cli.sweeper import without_repeats


def test_a_mode_without_regularizer_is_trained_once_per_gamma_grid():
    jobs = [
        [f"mode={m}", f"gamma={g}", "seeds=30"] for m in ("nomreg", "augreg", "equivariant") for g in (0.01, 0.1, 1, 10)
    ]
    kept = without_repeats(jobs)
    assert len(kept) == 9  # 2 modes x 4 gammas + 1 equivariant job
    assert ["mode=equivariant", "seeds=30"] in kept
    assert all(any(o.startswith("gamma=") for o in job) for job in kept if job[0] in ("mode=nomreg", "mode=augreg"))


def test_other_keys_still_split_jobs_and_the_default_mode_counts():
    jobs = [["gamma=1", "seed=0"], ["gamma=10", "seed=0"], ["gamma=1", "seed=1"], ["gamma=10", "seed=1"]]
    assert without_repeats(jobs, default_mode="nominal") == [["seed=0"], ["seed=1"]]
    assert without_repeats(jobs, default_mode="augreg") == jobs  # a regularized default keeps every γ
    ramps = [
        ["mode=augmented", "gamma=1", "gamma_schedule=exp"],
        ["mode=augmented", "gamma=1", "gamma_schedule=linear"],
    ]
    assert without_repeats(ramps) == [["mode=augmented"]]


def test_phases_keep_their_gammas():
    jobs = [["mode=nominal", "+phases=[{mode:augreg,epochs:1}]", f"gamma={g}"] for g in (1, 10)]
    assert without_repeats(jobs) == jobs


def test_exclude_drops_the_jobs_that_match_every_key_of_an_entry():
    jobs = [[f"model={m}", f"mode={mode}", "gamma=1"] for m in ("p4cnn", "z2cnn") for mode in ("equivariant", "augreg")]
    exclude = [{"model": "z2cnn", "mode": ["equivariant", "nomreg"]}]
    kept = without_repeats(jobs, exclude=exclude)
    assert kept == [["model=p4cnn", "mode=equivariant"], ["model=p4cnn", "mode=augreg", "gamma=1"], jobs[3]]
    # a key the job does not set never matches, so nothing else is dropped
    assert without_repeats(jobs, exclude=[{"model": "z2cnn", "seed": 0}]) == without_repeats(jobs)


def test_exclude_compares_values_as_hydra_writes_them():
    jobs = [["mode=augreg", "gamma=1"], ["mode=augreg", "gamma=null"], ["mode=augreg", "gamma=0.1"], ["twin=true"]]
    assert without_repeats(jobs, exclude=[{"gamma": 1.0}]) == [jobs[1], jobs[2], jobs[3]]  # 1.0 is gamma=1
    assert without_repeats(jobs, exclude=[{"gamma": None}, {"twin": True}]) == [jobs[0], jobs[2]]


def test_an_exclude_entry_that_is_not_a_mapping_is_refused_naming_it(capsys):
    """One line and exit 2 from the sweeper itself: a ValueError would reach the user as Hydra's four-line
    instantiation error, exit 1."""
    from hydra_plugins.eqtrain_sweeper.grid_sweeper import GridSweeper

    for entry in ("z2cnn", {}, 3):
        with pytest.raises(SystemExit) as stop:
            GridSweeper(max_batch_size=None, exclude=[entry])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"eqtrain: error: hydra.sweeper.exclude: {entry!r} is not valid: each entry maps keys")
        assert err.count("\n") == 1
    assert GridSweeper(max_batch_size=None, exclude=[{"model": "z2cnn"}]).exclude == [{"model": "z2cnn"}]


def test_jobs_are_named_by_what_differs_between_them():
    """The keys every job shares (a budget such as epochs=2) join the excluded keys of the jobs' directory names
    (hydra.job.override_dirname) and of TensorBoard's compared hparams: the names tell the jobs apart."""
    from eqtrain.cli.sweeper import constant_keys, named_by_what_differs

    jobs = [
        [f"mode={m}", f"gamma={g}", "epochs=2", "dataset.train_limit=300"]
        for m in ("augreg", "nomreg")
        for g in (0.1, 10)
    ]
    assert constant_keys(jobs) == ["dataset.train_limit", "epochs"]
    named = named_by_what_differs(jobs, ["device", "threads"])
    assert [job[:-1] for job in named] == jobs
    assert {job[-1] for job in named} == {
        "hydra.job.config.override_dirname.exclude_keys=[dataset.train_limit,device,epochs,threads]"
    }
    assert constant_keys(jobs[:1]) == []  # one job: nothing to tell apart, its name is its overrides
    # a preset the config leaves out of names (recipe) names the jobs where it is what differs
    recipes = [[f"recipe={r}", "model=p4cnn", "epochs=2"] for r in ("adam_b32", "cohen_welling")]
    assert {job[-1] for job in named_by_what_differs(recipes, ["experiment", "recipe"])} == {
        "hydra.job.config.override_dirname.exclude_keys=[epochs,experiment,model]"
    }


def test_eqtrain_m_sweeps_with_the_grid_unless_told_otherwise():
    """-m adds hydra/sweeper=grid; a sweeper, a search (Optuna's) or one's own config directory are left alone."""
    from eqtrain.cli.train import with_grid_sweeper

    assert with_grid_sweeper(["-m", "mode=augreg,nomreg"]) == ["-m", "mode=augreg,nomreg", "hydra/sweeper=grid"]
    assert with_grid_sweeper(["mode=augreg"]) == ["mode=augreg"]  # a single run
    for own in ("hydra/sweeper=basic", "hparams_search=gamma_optuna", "hydra.searchpath=[file://x]"):
        assert with_grid_sweeper(["--multirun", own]) == ["--multirun", own]


def test_gamma_f_splits_only_the_function_penalized_jobs():
    """γ means nothing to augfn, γ_f nothing to augreg: a grid over both trains each strength once per mode."""
    jobs = [
        [f"mode={m}", f"gamma={g}", f"gamma_f={f}"]
        for m in ("augreg", "augfn", "augmented")
        for g in (1, 10)
        for f in (0.1, 1)
    ]
    kept = without_repeats(jobs)
    assert kept == [
        ["mode=augreg", "gamma=1"],
        ["mode=augreg", "gamma=10"],
        ["mode=augfn", "gamma_f=0.1"],
        ["mode=augfn", "gamma_f=1"],
        ["mode=augmented"],
    ]
