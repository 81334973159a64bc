"""eqtrain-plot: the paper's figure (SPEC §8), the final values against γ (SPEC §10), and their tables.

Two figures from one sweep directory (reading, grouping and the refusal of mixed directories are
in ``sweep_reader.py``):

- ``curves`` (the default): one panel per γ, d(A_t) (or ``--tag``) against the step, each seed
  faint and the median over seeds bold, one colour per (mode, schedule); with summary.csv/.md,
  the last logged values per (mode, schedule, γ).
- ``--vs gamma`` (``vs_gamma.py``): the final value of ``--metric`` against γ, median and IQR over
  seeds, modes without γ as horizontal references; with its table.
"""

from __future__ import annotations

import argparse
import math
import sys
from functools import reduce
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .sweep_reader import (
    Key,
    PlotError,
    Run,
    csv_text,
    line_label,
    load_sweep,
    markdown_table,
    stats_table,
    write_outputs,
)
from .vs_gamma import DEFAULT_METRIC, vs_gamma_outputs

PROG = "eqtrain-plot"
TABLE_TAGS = ("dist_to_E/total", "acc/test", "acc/test_orbit", "equiv/test_error")
DEFAULT_TAG = "dist_to_E/total"
MAX_COLUMNS = 4  # panels per row before the figure wraps
FOOTNOTE = "Last logged value of each run; median and IQR (q75 − q25) over seeds; diverged (or interrupted) runs count in n only."

__all__ = ["TABLE_TAGS", "PlotError", "figure", "load_sweep", "main", "summarize"]


# --- the table ---------------------------------------------------------------------------------


def summarize(groups: dict[Key, list[Run]]) -> list[dict[str, object]]:
    """Per (mode, schedule, γ): n, how many diverged, and median / IQR over the other runs of each last value."""
    return stats_table(groups, TABLE_TAGS, Run.last)


# --- the figure --------------------------------------------------------------------------------


def median_curve(runs: list[Run], tag: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The pointwise median over runs on the steps every run logged (None if no run has the tag)."""
    curves = [r.scalars[tag] for r in runs if tag in r.scalars]
    if not curves:
        return None
    common = reduce(np.intersect1d, [steps for steps, _ in curves])
    # steps are written in increasing order, so searchsorted finds each common step's index
    stacked = np.stack([values[np.searchsorted(steps, common)] for steps, values in curves])
    return common, np.median(stacked, axis=0)


def figure(groups: dict[Key, list[Run]], tag: str = DEFAULT_TAG) -> Figure:
    """One panel per γ: each run faint, the median over seeds bold, one colour per (mode, schedule), log y.

    Modes without a regularizer (logged with γ = 0) do not depend on γ: they are drawn in every
    panel, as the paper's figure shows the equivariant model beside each γ.
    """
    gammas = sorted({gamma for *_, gamma in groups if gamma > 0}) or [0.0]
    lines = sorted({(mode, schedule) for mode, schedule, _ in groups})
    colour = {line: f"C{i % 10}" for i, line in enumerate(lines)}
    ncols = min(len(gammas), MAX_COLUMNS)
    nrows = math.ceil(len(gammas) / ncols)
    # Figure + Agg canvas rather than pyplot: no display and no global backend switch
    fig = Figure(figsize=(4.0 * ncols, 3.2 * nrows + 0.6), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, gamma in zip(axes, gammas):
        _panel(ax, {key: runs for key, runs in groups.items() if key[2] in (gamma, 0)}, tag, colour)
        ax.set_title(f"γ = {gamma:g}")
    # once, after all panels are drawn: the shared y axis then scales to all data, and a panel
    # whose values are all 0 (d(A) of the equivariant mode) does not warn on its own
    axes[0].set_yscale("log", nonpositive="mask")
    for ax in axes[len(gammas) :]:
        ax.set_visible(False)
    for ax in axes[max(len(gammas) - ncols, 0) : len(gammas)]:  # the lowest visible panel of each column
        ax.set_xlabel("step")
        ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[::ncols]:
        ax.set_ylabel(tag)
    label = line_label(groups)
    handles = [Line2D([], [], color=colour[line], lw=2.0, label=_legend(groups, tag, line, label)) for line in lines]
    handles += [
        Line2D([], [], color="grey", lw=0.6, alpha=0.6, label="one seed"),
        Line2D([], [], color="grey", lw=2.0, label="median over seeds"),
    ]
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 4), frameon=False)
    return fig


def _panel(ax, groups: dict[Key, list[Run]], tag: str, colour: dict[tuple[str, str], str]) -> None:
    """The runs of one γ panel: each faint (dotted if diverged), the median of the finished ones bold."""
    positive = False
    for (mode, schedule, _), runs in groups.items():
        for run in runs:
            if tag in run.scalars:
                steps, values = run.scalars[tag]
                positive = positive or bool(np.any(values > 0))
                # rasterized: a 30-seed sweep has millions of points, too many for a vector PDF
                style = ":" if run.diverged else "-"
                ax.plot(steps, values, style, color=colour[mode, schedule], lw=0.6, alpha=0.3, rasterized=True)
        median = median_curve([r for r in runs if not r.diverged], tag)
        if median is not None:
            ax.plot(*median, color=colour[mode, schedule], lw=2.0)
    if not positive:  # say why the panel is empty rather than leave the reader guessing
        ax.text(0.5, 0.5, f"no positive {tag}:\nnothing to show on a log scale", transform=ax.transAxes, ha="center")
    ax.grid(True, which="major", alpha=0.3)


def _legend(groups: dict[Key, list[Run]], tag: str, line: tuple[str, str], label_of) -> str:
    """A line's label (``label_of``: ``line_label(groups)``); a mode exactly on E has nothing to draw on a
    log scale: say so."""
    values = [
        v for (m, s, _), runs in groups.items() if (m, s) == line for r in runs for v in r.scalars.get(tag, ((), ()))[1]
    ]
    label = label_of(line)
    return f"{label} (= 0: on E)" if values and max(values) <= 0 else label


# --- the command -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="From an eqtrain sweep directory: the paper's figure (curves.png/.pdf: one panel per γ, each "
        "seed faint, median bold) and a table of last values per (mode, schedule, γ) (summary.csv/.md); or, "
        "with --vs gamma, the final value of a metric against γ, median and IQR over seeds, modes without γ as "
        "horizontal references (vs_gamma_<metric>.png/.pdf/.csv/.md). Damaged runs are skipped or drawn as far "
        "as they can be read, with a note.",
    )
    parser.add_argument("sweep_dir", type=Path, help="directory holding run directories (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the outputs (default: SWEEP_DIR)")
    parser.add_argument("--vs", choices=("step", "gamma"), default="step", help="x axis: step (curves) or gamma")
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"curves: scalar on the y axis (default: {DEFAULT_TAG})")
    parser.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        help=f"--vs gamma: final value on the y axis (default: {DEFAULT_METRIC}); several, comma-separated: one "
        "panel each (vs_gamma_panels.*)",
    )
    return parser.parse_args(argv)


def curves_outputs(groups: dict[Key, list[Run]], tag: str, notes: list[str], out: Path) -> tuple[dict, str]:
    if not any(tag in r.scalars for runs in groups.values() for r in runs):
        found = sorted({t for runs in groups.values() for r in runs for t in r.scalars})
        raise PlotError(f"--tag {tag} is in no run; tags found: {', '.join(found)}")
    fig = figure(groups, tag)
    rows = summarize(groups)
    table = markdown_table(rows)
    outputs = {
        out / "curves.png": fig,
        out / "curves.pdf": fig,
        out / "summary.csv": csv_text(rows),
        out / "summary.md": f"{table}\n{FOOTNOTE}\n" + "".join(f"\n{n}" for n in notes) + ("\n" if notes else ""),
    }
    return outputs, f"{table}\n{FOOTNOTE}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out if args.out is not None else args.sweep_dir
    try:
        groups, notes = load_sweep(args.sweep_dir)
        if args.vs == "gamma":
            outputs, printed = vs_gamma_outputs(groups, args.metric, notes, out)
        else:
            outputs, printed = curves_outputs(groups, args.tag, notes, out)
        if out.exists() and not out.is_dir():
            raise PlotError(f"--out {out} is a file, not a directory; pass a directory for the outputs")
        try:
            out.mkdir(parents=True, exist_ok=True)
            write_outputs(outputs)
        except OSError as err:
            raise PlotError(
                f"cannot write the outputs into {out} ({err.strerror or err}); pass a writable --out"
            ) from err
    except PlotError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    for note in notes:
        print(note, file=sys.stderr)
    print(printed)
    print("wrote " + ", ".join(str(p) for p in outputs))
    return 0
