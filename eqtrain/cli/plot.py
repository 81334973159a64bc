"""eqtrain-plot: the paper's figure (SPEC §8) and a table of final values from a sweep directory.

A sweep (``eqtrain -m mode=nomreg,augreg gamma=0.1,1 'seed=range(30)'``) leaves one run directory
per job, each with TensorBoard event files and ``metrics.json``. Runs are grouped by (mode, γ);
the seeds are the repetitions. Anything else that differs between runs (dataset, lr, ...) makes
the medians meaningless, so such a "mixed" directory is refused rather than plotted.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

PROG = "eqtrain-plot"
EVENTS_GLOB = "events.out.tfevents.*"
GROUP_KEYS = ("mode", "gamma")  # one curve family / table row per value pair
REPEAT_KEYS = ("seed",)  # the repetitions a median is taken over
TABLE_TAGS = ("dist_to_E/total", "acc/test", "acc/test_orbit", "equiv/test_error")
DEFAULT_TAG = "dist_to_E/total"
MAX_COLUMNS = 4  # panels per row before the figure wraps
FOOTNOTE = "Last logged value of each run; median and IQR (q75 − q25) over seeds; diverged (or interrupted) runs count in n only."


class PlotError(Exception):
    """A problem with the user's input, reported as one line and exit status 2."""


@dataclass
class Run:
    path: Path
    hparams: dict
    status: str
    scalars: dict[str, tuple[np.ndarray, np.ndarray]]  # tag -> (steps, values), in file order

    @property
    def key(self) -> tuple[str, float]:
        return str(self.hparams["mode"]), float(self.hparams["gamma"])

    @property
    def diverged(self) -> bool:
        """Diverged or interrupted: its last values are not a finished run's, so no statistics."""
        return self.status in ("diverged", "interrupted")

    def last(self, tag: str) -> float:
        """The tag's last value in the event file (NaN when the run never logged it)."""
        values = self.scalars.get(tag, (None, np.array([])))[1]
        return float(values[-1]) if values.size else math.nan


# --- reading a sweep ---------------------------------------------------------------------------


def find_run_dirs(root: Path) -> tuple[list[Path], list[Path]]:
    """(finished run directories, directories with event files but no metrics.json) under root."""
    event_dirs = sorted({p.parent for p in root.rglob(EVENTS_GLOB)})
    finished = [d for d in event_dirs if (d / "metrics.json").is_file()]
    return finished, [d for d in event_dirs if d not in finished]


def read_scalars(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar of a run, with TensorBoard's reader and no sampling (size_guidance 0 keeps all)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        steps = np.fromiter((e.step for e in events), dtype=np.int64, count=len(events))
        values = np.fromiter((e.value for e in events), dtype=np.float64, count=len(events))
        out[tag] = steps, values
    return out


def load_run(run_dir: Path) -> Run:
    path = run_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PlotError(f"cannot read {path}: {err}") from err
    hparams = metrics.get("hparams")
    if not isinstance(hparams, dict) or any(k not in hparams for k in GROUP_KEYS):
        raise PlotError(f"{path} has no hparams with {' and '.join(GROUP_KEYS)}: not written by eqtrain?")
    return Run(run_dir, hparams, str(metrics.get("status", "completed")), read_scalars(run_dir))


def check_one_setting(runs: list[Run], root: Path) -> None:
    """Refuse runs that differ in more than mode, γ and seed: their medians would mix settings."""
    ignored = set(GROUP_KEYS) | set(REPEAT_KEYS)
    keys = sorted(set().union(*(r.hparams for r in runs)) - ignored)
    differing = []
    for key in keys:
        counts = Counter(_show(r.hparams.get(key, "<missing>")) for r in runs)
        if len(counts) > 1:
            found = ", ".join(f"{v} ({n} run{'s' * (n > 1)})" for v, n in sorted(counts.items()))
            differing.append(f"{key} = {found}")
    if differing:
        raise PlotError(
            f"{root} mixes runs that differ in more than {', '.join(GROUP_KEYS + REPEAT_KEYS)}: "
            + "; ".join(differing)
            + " (plot each setting from its own directory)"
        )


def drop_duplicates(runs: list[Run]) -> tuple[list[Run], int]:
    """Keep one run per identical hparams: a sweep over γ repeats modes without regularizer (γ = 0)."""
    kept: dict[str, Run] = {}
    for run in runs:
        kept.setdefault(json.dumps(run.hparams, sort_keys=True, default=str), run)
    return list(kept.values()), len(runs) - len(kept)


def group_runs(runs: list[Run]) -> dict[tuple[str, float], list[Run]]:
    """Runs by (mode, γ), sorted by γ then mode, each group sorted by seed."""
    groups: dict[tuple[str, float], list[Run]] = {}
    for run in runs:
        groups.setdefault(run.key, []).append(run)
    return {
        k: sorted(groups[k], key=lambda r: _show(r.hparams.get("seed")))
        for k in sorted(groups, key=lambda k: (k[1], k[0]))
    }


def _show(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# --- the table ---------------------------------------------------------------------------------


def summarize(groups: dict[tuple[str, float], list[Run]]) -> list[dict[str, object]]:
    """Per (mode, γ): n, how many diverged, and median / IQR over the other runs of each last value.

    Diverged runs are counted but left out of the statistics: their last value is where the
    loss blew up, not where training ended.
    """
    rows = []
    for (mode, gamma), runs in groups.items():
        row: dict[str, object] = {"mode": mode, "gamma": gamma, "n": len(runs)}
        row["diverged"] = sum(r.diverged for r in runs)
        kept = [r for r in runs if not r.diverged]
        for tag in TABLE_TAGS:
            finals = np.array([r.last(tag) for r in kept])
            q25, med, q75 = np.percentile(finals, [25, 50, 75]) if finals.size else (math.nan,) * 3
            row[f"{tag} median"], row[f"{tag} IQR"] = float(med), float(q75 - q25)
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, object]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)  # floats at full precision (repr); the Markdown table rounds


def markdown_table(rows: list[dict[str, object]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join("γ" if c == "gamma" else c for c in columns) + " |"]
    lines.append("|" + "|".join("---" if c == "mode" else "---:" for c in columns) + "|")
    for row in rows:
        cells = [_cell(c, row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(column: str, value: object) -> str:
    if column == "gamma":
        return f"{value:g}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


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


def figure(groups: dict[tuple[str, float], list[Run]], tag: str = DEFAULT_TAG) -> Figure:
    """One panel per γ: each run faint, the median over seeds bold, one colour per mode, log y.

    Modes without a regularizer (logged with γ = 0) do not depend on γ: they are drawn in every
    panel, as the paper's figure shows the equivariant model beside each γ.
    """
    gammas = sorted({gamma for _, gamma in groups if gamma > 0}) or [0.0]
    modes = sorted({mode for mode, _ in groups})
    colour = {mode: f"C{i % 10}" for i, mode in enumerate(modes)}
    ncols = min(len(gammas), MAX_COLUMNS)
    nrows = math.ceil(len(gammas) / ncols)
    # Figure + Agg canvas rather than pyplot: no display and no global backend switch
    fig = Figure(figsize=(4.0 * ncols, 3.2 * nrows + 0.6), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, gamma in zip(axes, gammas):
        positive = False
        for (mode, g), runs in groups.items():
            if g != gamma and g != 0:
                continue
            for run in runs:
                if tag in run.scalars:
                    steps, values = run.scalars[tag]
                    positive = positive or bool(np.any(values > 0))
                    # rasterized: a 30-seed sweep has millions of points, too many for a vector PDF
                    style = ":" if run.diverged else "-"
                    ax.plot(steps, values, style, color=colour[mode], lw=0.6, alpha=0.3, rasterized=True)
            median = median_curve([r for r in runs if not r.diverged], tag)
            if median is not None:
                ax.plot(*median, color=colour[mode], lw=2.0)
        if not positive:  # say why the panel is empty rather than leave the reader guessing
            ax.text(
                0.5, 0.5, f"no positive {tag}:\nnothing to show on a log scale", transform=ax.transAxes, ha="center"
            )
        ax.set_title(f"γ = {gamma:g}")
        ax.grid(True, which="major", alpha=0.3)
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

    def label(mode: str) -> str:  # a mode exactly on E has nothing to draw on a log scale: say so
        values = [
            v for (m, _), runs in groups.items() if m == mode for r in runs for v in r.scalars.get(tag, ((), ()))[1]
        ]
        return f"{mode} (= 0: on E)" if values and max(values) <= 0 else mode

    handles = [Line2D([], [], color=colour[m], lw=2.0, label=label(m)) for m in modes]
    handles += [
        Line2D([], [], color="grey", lw=0.6, alpha=0.6, label="one seed"),
        Line2D([], [], color="grey", lw=2.0, label="median over seeds"),
    ]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False)
    return fig


# --- the command -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The paper's figure (curves.png/.pdf: one panel per γ, each seed faint, median bold) "
        "and a table of final values per (mode, γ) (summary.csv/.md) from an eqtrain sweep directory.",
    )
    parser.add_argument("sweep_dir", type=Path, help="directory holding run directories (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the outputs (default: SWEEP_DIR)")
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"scalar on the y axis (default: {DEFAULT_TAG})")
    return parser.parse_args(argv)


def load_sweep(root: Path) -> tuple[dict[tuple[str, float], list[Run]], list[str]]:
    """The runs under root grouped by (mode, γ), and notes for the user; PlotError if unusable."""
    if not root.is_dir():
        raise PlotError(f"{root} does not exist or is not a directory")
    run_dirs, unfinished = find_run_dirs(root)
    if not run_dirs:
        raise PlotError(f"no eqtrain runs under {root} (looked for directories with {EVENTS_GLOB} and metrics.json)")
    runs, duplicates = drop_duplicates([load_run(d) for d in run_dirs])
    check_one_setting(runs, root)
    notes = [f"note: skipped {len(unfinished)} unfinished run(s) without metrics.json"] if unfinished else []
    if duplicates:
        notes.append(f"note: ignored {duplicates} run(s) with the same hparams as another run")
    return group_runs(runs), notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        groups, notes = load_sweep(args.sweep_dir)
        if not any(args.tag in r.scalars for runs in groups.values() for r in runs):
            found = sorted({t for runs in groups.values() for r in runs for t in r.scalars})
            raise PlotError(f"--tag {args.tag} is in no run; tags found: {', '.join(found)}")
    except PlotError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else args.sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    fig = figure(groups, args.tag)
    paths = [out / "curves.png", out / "curves.pdf", out / "summary.csv", out / "summary.md"]
    for path in paths[:2]:
        fig.savefig(path)
    rows = summarize(groups)
    table = markdown_table(rows)
    write_csv(rows, paths[2])
    paths[3].write_text(f"{table}\n{FOOTNOTE}\n")
    for note in notes:
        print(note, file=sys.stderr)
    print(table)
    print(FOOTNOTE)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
