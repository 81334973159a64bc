"""eqtrain-plot on a real (tiny) sweep made by the real CLI: the figure, the table and the refusals."""

import csv
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from eqtrain.cli.plot import TABLE_TAGS, figure, load_sweep, main

from .. import helpers

# A real sweep or many steps of a wider network per test; one worker, so the module's sweep is trained once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("plot")]

SMOKE = ("experiment=smoke", "max_steps=6")
MODES, GAMMAS, SEEDS = ("nomreg", "augreg"), (0.1, 1.0), (0, 1)


def eqtrain(cwd: Path, *args: str) -> None:
    proc = helpers.eqtrain(cwd, *args)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """2 modes x 2 γ x 2 seeds = 8 runs of 6 steps, as `eqtrain -m` writes them."""
    tmp = tmp_path_factory.mktemp("plot")
    eqtrain(
        tmp,
        "-m",
        *SMOKE,
        f"mode={','.join(MODES)}",
        f"gamma={','.join(map(str, GAMMAS))}",
        f"seed={','.join(map(str, SEEDS))}",
        f"hydra.sweep.dir={tmp / 'sweep'}",
    )
    return tmp / "sweep"


def copy_of(sweep: Path, tmp_path: Path) -> Path:
    """A private copy, for tests that add or change runs (the fixture is shared)."""
    return Path(shutil.copytree(sweep, tmp_path / "sweep"))


def event_scalars(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read back independently of eqtrain-plot, with TensorBoard's reader and no sampling."""
    return {t: (np.array(steps), np.array(values)) for t, (steps, values) in helpers.scalars(run_dir).items()}


def runs_by_group(sweep: Path) -> dict[tuple[str, float], list[Path]]:
    groups: dict[tuple[str, float], list[Path]] = {}
    for metrics in sorted(sweep.rglob("metrics.json")):
        hp = json.loads(metrics.read_text())["hparams"]
        groups.setdefault((hp["mode"], float(hp["gamma"])), []).append(metrics.parent)
    return groups


def png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])  # the IHDR chunk
    return width, height


def read_csv(path: Path) -> dict[tuple[str, float], dict[str, str]]:
    with path.open() as f:
        return {(r["mode"], float(r["gamma"])): r for r in csv.DictReader(f)}


def test_sweep_gives_the_figure_and_a_table_matching_the_event_files(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("curves.png", "curves.pdf", "summary.csv", "summary.md"):
        assert (out / name).stat().st_size > 0, name
        assert str(out / name) in printed
    assert (out / "curves.pdf").read_bytes().startswith(b"%PDF")
    assert png_size(out / "curves.png") == (1200, 570)  # 2 panels of 4 in at 150 dpi, plus the legend row

    rows = read_csv(out / "summary.csv")
    assert set(rows) == {(m, g) for m in MODES for g in GAMMAS}
    markdown = (out / "summary.md").read_text()
    assert markdown.split("\n\n")[0].strip() in printed
    cells = {}
    for line in markdown.splitlines()[2:]:
        if line.startswith("| "):
            mode, gamma, *rest = (c.strip() for c in line.strip("|").split("|"))
            cells[mode, float(gamma)] = rest
    header = [c.strip() for c in markdown.splitlines()[0].strip("|").split("|")][2:]

    for key, run_dirs in runs_by_group(sweep).items():
        assert int(rows[key]["n"]) == len(SEEDS) and int(rows[key]["diverged"]) == 0
        scalars = [event_scalars(d) for d in run_dirs]
        for tag in TABLE_TAGS:
            finals = np.array([s[tag][1][-1] for s in scalars])
            median, iqr = np.median(finals), np.percentile(finals, 75) - np.percentile(finals, 25)
            assert float(rows[key][f"{tag} median"]) == pytest.approx(median, rel=1e-12, abs=0)
            assert float(rows[key][f"{tag} IQR"]) == pytest.approx(iqr, rel=1e-9, abs=1e-15)
            row = dict(zip(header, cells[key]))
            assert row[f"{tag} median"] == f"{median:.4g}" and row[f"{tag} IQR"] == f"{iqr:.4g}", (key, tag)


def test_figure_has_one_panel_per_gamma_with_seeds_faint_and_the_median_bold(sweep):
    groups, _ = load_sweep(sweep)
    axes = [ax for ax in figure(groups).axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [f"γ = {g:g}" for g in GAMMAS]
    colours = {}
    for ax, gamma in zip(axes, GAMMAS):
        assert ax.get_yscale() == "log"
        faint = [line for line in ax.get_lines() if line.get_linewidth() < 1]
        bold = [line for line in ax.get_lines() if line.get_linewidth() >= 1]
        assert len(faint) == len(MODES) * len(SEEDS) and len(bold) == len(MODES)
        for mode, line in zip(MODES[::-1], bold):  # groups are drawn in sorted mode order
            colours.setdefault(mode, line.get_color())
            assert line.get_color() == colours[mode], "one colour per mode in every panel"
            curves = [event_scalars(d)["dist_to_E/total"] for d in runs_by_group(sweep)[mode, gamma]]
            np.testing.assert_array_equal(line.get_xdata(), curves[0][0])
            np.testing.assert_allclose(line.get_ydata(), np.median([v for _, v in curves], axis=0), rtol=1e-12)
    assert len(set(colours.values())) == len(MODES)


def test_diverged_runs_are_counted_but_left_out_of_the_statistics(sweep, tmp_path, capsys):
    sweep = copy_of(sweep, tmp_path)
    bad, good = runs_by_group(sweep)["nomreg", 1.0]
    metrics = json.loads((bad / "metrics.json").read_text())
    (bad / "metrics.json").write_text(json.dumps({**metrics, "status": "diverged"}))
    assert main([str(sweep)]) == 0
    row = read_csv(sweep / "summary.csv")["nomreg", 1.0]
    assert (row["n"], row["diverged"]) == ("2", "1")
    final = event_scalars(good)["dist_to_E/total"][1][-1]
    assert float(row["dist_to_E/total median"]) == final and float(row["dist_to_E/total IQR"]) == 0
    assert read_csv(sweep / "summary.csv")["nomreg", 0.1]["diverged"] == "0"


def test_a_copied_run_is_counted_once(sweep, tmp_path, capsys):
    sweep = copy_of(sweep, tmp_path)
    first = runs_by_group(sweep)["augreg", 0.1][0]
    shutil.copytree(first, sweep / "again" / first.name)
    assert main([str(sweep)]) == 0
    assert read_csv(sweep / "summary.csv")["augreg", 0.1]["n"] == "2"
    assert "1 run(s) with the same hparams" in capsys.readouterr().err


def test_mixed_sweep_is_refused_naming_the_differing_key(sweep, tmp_path, capsys):
    sweep = copy_of(sweep, tmp_path)
    eqtrain(tmp_path, *SMOKE, "mode=nomreg", "gamma=0.1", "lr=0.01", f"hydra.run.dir={sweep / 'extra'}")
    assert main([str(sweep), "--out", str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("eqtrain-plot: error:") and "lr = 0.01 (1 run), 0.02 (8 runs)" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["empty", "missing"])
def test_empty_or_missing_directory_is_one_line_and_exit_2(tmp_path, capsys, name):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / name)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    expected = "no eqtrain runs under" if name == "empty" else "does not exist"
    assert line.startswith("eqtrain-plot: error:") and expected in line and name in line


def test_unknown_tag_names_the_tags_found(sweep, tmp_path, capsys):
    assert main([str(sweep), "--out", str(tmp_path), "--tag", "dist_to_E/totl"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eqtrain-plot: error: --tag dist_to_E/totl") and "dist_to_E/total" in err


def test_the_sweep_summary_names_a_plot_command_that_works(sweep, tmp_path, capsys):
    """The end of a sweep suggests eqtrain-plot on the sweep where eqtrain-plot accepts it, and one job at a time
    (naming what differs) where its jobs differ in more than mode and γ, as a recipe search's do."""
    from eqtrain.cli.summary import sweep_summary

    (whole,) = [line for line in sweep_summary(sweep).splitlines() if "eqtrain-plot" in line]
    assert whole.strip() == f"figure and table: eqtrain-plot {sweep}"
    assert main([whole.split("eqtrain-plot ")[1], "--out", str(tmp_path / "whole")]) == 0
    mixed = copy_of(sweep, tmp_path)
    eqtrain(tmp_path, *SMOKE, "mode=nomreg", "gamma=0.1", "lr=0.01", f"hydra.run.dir={mixed / 'extra'}")
    (per_job,) = [line for line in sweep_summary(mixed).splitlines() if "eqtrain-plot" in line]
    assert "one per job (its jobs differ in lr)" in per_job and per_job.endswith(f"eqtrain-plot {mixed}/<job>")
    job = next(p for p in mixed.iterdir() if p.is_dir() and p.name != "extra")
    assert main([str(job), "--out", str(tmp_path / "job")]) == 0
