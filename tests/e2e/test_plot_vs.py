"""eqtrain-plot SWEEP --vs gamma: final values against γ, read back from a tiny real sweep.

The sweep holds every kind of directory a user has: jobs of ``seeds=2`` (``seed=<s>/`` run
directories), an old-style γ grid of one run directory per seed, modes without a regularizer
(γ = 0: the horizontal references) and a ramped augreg (its own line and row).
"""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from eqtrain.cli.plot import main
from eqtrain.cli.sweep_reader import load_sweep
from eqtrain.cli.vs_gamma import TABLE_METRICS, figure

from ..helpers import make_config, train_config

TINY = ("dataset.train_limit=40", "dataset.test_limit=20", "epochs=1", "max_steps=3")
RAMP = ("gamma_schedule=exp", "gamma_start=0.01", "gamma_ramp_steps=2")
RAMP_NAME = "exp ramp from 0.01 over 2 steps"
JOBS = {  # directory -> overrides; every job trains seeds 0 and 1
    "equivariant": ("mode=equivariant", "seeds=2"),
    "nominal": ("mode=nominal", "seeds=2"),
    "augreg_0.1": ("mode=augreg", "gamma=0.1", "seeds=2"),
    "augreg_1": ("mode=augreg", "gamma=1", "seeds=2"),
    "augreg_ramp_1": ("mode=augreg", "gamma=1", *RAMP, "seeds=2"),
    "old/nomreg_1_seed0": ("mode=nomreg", "gamma=1", "seed=0"),  # one run directory per seed, as before seeds=N
    "old/nomreg_1_seed1": ("mode=nomreg", "gamma=1", "seed=1"),
}
GROUPS = {
    ("equivariant", "constant", 0.0),
    ("nominal", "constant", 0.0),
    ("augreg", "constant", 0.1),
    ("augreg", "constant", 1.0),
    ("augreg", RAMP_NAME, 1.0),
    ("nomreg", "constant", 1.0),
}

# One worker (xdist_group): the module's sweep of 7 jobs (12 runs of 3 steps) is trained once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("plot_vs")]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vs") / "sweep"
    for name, overrides in JOBS.items():
        train_config(make_config(*TINY, *overrides), root / name)
    return root


def metrics_by_group(sweep: Path) -> dict[tuple[str, str, float], list[dict]]:
    """Every run's metrics.json, grouped independently of eqtrain-plot."""
    groups: dict[tuple[str, str, float], list[dict]] = {}
    for path in sorted(sweep.rglob("metrics.json")):
        m = json.loads(path.read_text())
        hp = m["hparams"]
        ramp = hp["gamma_schedule"] != "constant" and hp["gamma"] > 0
        schedule = (
            f"{hp['gamma_schedule']} ramp from {hp['gamma_start']:g} over {hp['gamma_ramp']}" if ramp else "constant"
        )
        groups.setdefault((hp["mode"], schedule, float(hp["gamma"])), []).append(m)
    return groups


def read_csv(path: Path) -> dict[tuple[str, str, float], dict[str, str]]:
    with path.open() as f:
        return {(r["mode"], r["schedule"], float(r["gamma"])): r for r in csv.DictReader(f)}


def test_table_reads_back_the_runs_metrics_json(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(sweep), "--vs", "gamma", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    base = out / "vs_gamma_acc_test_orbit"
    for suffix in (".png", ".pdf", ".csv", ".md"):
        assert base.with_suffix(suffix).stat().st_size > 0 and str(base.with_suffix(suffix)) in printed
    rows = read_csv(base.with_suffix(".csv"))
    expected = metrics_by_group(sweep)
    assert set(rows) == set(expected) == GROUPS
    header = list(next(iter(rows.values())))
    assert header[:5] == ["mode", "schedule", "gamma", "n", "diverged"]
    assert header[5:7] == ["acc/test_orbit median", "acc/test_orbit IQR"]  # the chosen metric first
    markdown = {}
    for line in base.with_suffix(".md").read_text().splitlines()[2:]:
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip("|").split("|")]
            markdown[cells[0], cells[1], float(cells[2])] = dict(zip(header, cells))
    for key, runs in expected.items():
        row = rows[key]
        assert (row["n"], row["diverged"]) == ("2", "0"), key
        for metric in ("acc/test_orbit", *TABLE_METRICS):
            finals = np.array([m[metric] for m in runs], dtype=float)
            median, iqr = np.median(finals), np.percentile(finals, 75) - np.percentile(finals, 25)
            assert float(row[f"{metric} median"]) == pytest.approx(median, rel=1e-12, abs=0), (key, metric)
            assert float(row[f"{metric} IQR"]) == pytest.approx(iqr, rel=1e-9, abs=1e-15), (key, metric)
            assert markdown[key][f"{metric} median"] == f"{median:.4g}", (key, metric)


def test_figure_one_line_per_mode_and_schedule_with_references(sweep):
    groups, notes = load_sweep(sweep)
    assert not notes
    fig = figure(groups, "acc/test")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    expected = metrics_by_group(sweep)
    median = {k: np.median([m["acc/test"] for m in runs]) for k, runs in expected.items()}
    lines = {line.get_label(): line for line in ax.get_lines()}
    augreg = lines["augreg"]
    np.testing.assert_array_equal(augreg.get_xdata(), [0.1, 1.0])
    np.testing.assert_allclose(augreg.get_ydata(), [median["augreg", "constant", g] for g in (0.1, 1.0)], rtol=1e-12)
    ramp = lines["augreg (exp ramp)"]  # its own line, labelled by its kind of ramp
    np.testing.assert_allclose(ramp.get_ydata(), [median["augreg", RAMP_NAME, 1.0]], rtol=1e-12)
    for mode in ("equivariant", "nominal"):  # γ = 0: a horizontal reference
        ref = lines[f"{mode} (no γ)"]
        assert list(ref.get_xdata()) == [0, 1] and ref.get_linestyle() == "--"
        np.testing.assert_allclose(ref.get_ydata(), [median[mode, "constant", 0.0]] * 2, rtol=1e-12)
    colours = [line.get_color() for line in lines.values()]
    assert len(set(colours)) == len(colours)
    assert len(ax.collections) == 3  # the IQR bands of the three lines (the references' are axhspan patches)


def test_other_metrics_and_an_unknown_one(sweep, tmp_path, capsys):
    assert main([str(sweep), "--vs", "gamma", "--metric", "dist_to_E_rel/total", "--out", str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "vs_gamma_dist_to_E_rel_total.csv")
    assert list(next(iter(rows.values())))[5] == "dist_to_E_rel/total median"
    assert float(rows["equivariant", "constant", 0.0]["dist_to_E_rel/total median"]) == 0.0
    capsys.readouterr()
    assert main([str(sweep), "--vs", "gamma", "--metric", "acc/tset", "--out", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert (
        line.startswith("eqtrain-plot: error: --metric acc/tset is in no run's metrics.json")
        and "acc/test_orbit" in line
    )


def test_the_curves_figure_keeps_working_with_a_ramp(sweep, tmp_path, capsys):
    assert main([str(sweep), "--out", str(tmp_path)]) == 0
    with (tmp_path / "summary.csv").open() as f:
        rows = {(r["mode"], r["schedule"], float(r["gamma"])): r for r in csv.DictReader(f)}
    assert set(rows) == GROUPS
    groups, _ = load_sweep(sweep)
    from eqtrain.cli.plot import figure as curves

    axes = [ax for ax in curves(groups).axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["γ = 0.1", "γ = 1"]
    bold = [line for line in axes[1].get_lines() if line.get_linewidth() >= 1]
    assert len(bold) == 5  # equivariant, nominal, augreg, augreg (exp ramp), nomreg
    assert len({line.get_color() for line in bold}) == 5


def test_modes_without_gamma_alone_are_refused(sweep, tmp_path, capsys):
    refs = tmp_path / "refs"
    for name in ("equivariant", "nominal"):
        shutil.copytree(sweep / name, refs / name)
    assert main([str(refs), "--vs", "gamma"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "needs runs with a regularizer" in line and "equivariant, nominal" in line


def test_a_mixed_directory_is_refused(sweep, tmp_path, capsys):
    mixed = Path(shutil.copytree(sweep, tmp_path / "mixed"))
    train_config(make_config(*TINY, "mode=augreg", "gamma=1", "lr=0.01"), mixed / "other_lr")
    assert main([str(mixed), "--vs", "gamma", "--out", str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    default = json.dumps(make_config().lr)
    assert line.startswith("eqtrain-plot: error:") and f"lr = 0.01 (1 run), {default} (12 runs)" in line
    assert not (tmp_path / "out").exists()


def test_several_metrics_draw_one_panel_each_with_the_same_medians(sweep, tmp_path, capsys):
    metrics = ["acc/test", "dist_to_E_rel/total", "equiv/layer/conv1"]
    assert main([str(sweep), "--vs", "gamma", "--metric", ",".join(metrics), "--out", str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "vs_gamma_panels.csv")
    assert [c for c in next(iter(rows.values())) if c.endswith(" median")][:3] == [f"{m} median" for m in metrics]
    groups, _ = load_sweep(sweep)
    fig = figure(groups, metrics)
    assert [ax.get_ylabel() for ax in fig.axes] == [f"final {m}" for m in metrics]
    expected = metrics_by_group(sweep)
    for ax, metric in zip(fig.axes, metrics):
        (augreg,) = [line for line in ax.get_lines() if line.get_label() == "augreg"]
        median = [np.median([m[metric] for m in expected["augreg", "constant", g]]) for g in (0.1, 1.0)]
        np.testing.assert_allclose(augreg.get_ydata(), median, rtol=1e-12)
    assert fig.axes[0].get_legend() is not None and fig.axes[1].get_legend() is None
    capsys.readouterr()
    assert main([str(sweep), "--vs", "gamma", "--metric", "acc/test,acc/tset", "--out", str(tmp_path)]) == 2
    assert "--metric acc/tset is in no run's metrics.json" in capsys.readouterr().err


def test_a_sweep_over_models_names_each_group_after_its_model(sweep, tmp_path, capsys):
    """The rotated-MNIST study sweeps model=p4cnn,z2cnn: their own keys (channels, fibers) may differ, each
    model's runs must agree on them, and every row and line says its model."""
    both = Path(shutil.copytree(sweep, tmp_path / "both"))
    train_config(make_config(*TINY, "model=gcnn", "mode=augmented", "seeds=2"), both / "gcnn_augmented")
    assert main([str(both), "--vs", "gamma", "--out", str(tmp_path / "out")]) == 0
    rows = read_csv(tmp_path / "out" / "vs_gamma_acc_test_orbit.csv")
    assert set(rows) == {(f"paper_cnn {m}", s, g) for m, s, g in GROUPS} | {("gcnn augmented", "constant", 0.0)}
    capsys.readouterr()
    train_config(make_config(*TINY, "model=gcnn", "model.channels=[2,2]", "mode=nominal"), both / "gcnn_narrow")
    assert main([str(both), "--vs", "gamma", "--out", str(tmp_path / "out2")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "mixes runs" in line and "channels = " in line
    # only the model's own keys may follow the model: another lr for one model's runs is a mixed directory
    shutil.rmtree(both / "gcnn_narrow")
    train_config(make_config(*TINY, "model=gcnn", "lr=0.5", "mode=nominal"), both / "gcnn_other_lr")
    shutil.rmtree(both / "gcnn_augmented")
    assert main([str(both), "--vs", "gamma", "--out", str(tmp_path / "out3")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "mixes runs" in line and "lr = " in line
