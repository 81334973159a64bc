"""``eqtrain-plot SWEEP --vs gamma``: the final value of a metric against γ (SPEC §10, the accuracy study).

One line per (mode, schedule) with a regularizer, at each γ the median over seeds with the
interquartile range as a band, on a log γ axis. Modes without a regularizer (equivariant,
nominal, augmented: logged with γ = 0) are horizontal references, median line and IQR band.
The final values are those of each run's metrics.json. Beside it a table per (mode, schedule, γ):
n, diverged, and median / IQR of the chosen metric and of the test accuracies.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .sweep_reader import Key, PlotError, Run, csv_text, line_label, markdown_table, median_iqr, stats_table

DEFAULT_METRIC = "acc/test_orbit"
METRICS = ("acc/test_orbit", "acc/test", "acc/test_projected", "dist_to_E_rel/total")  # documented choices
TABLE_METRICS = ("acc/test", "acc/test_orbit", "acc/test_projected")  # always in the table
FOOTNOTE = (
    "Final value of each run (its metrics.json); median and IQR (q75 − q25) over seeds; diverged (or "
    "interrupted) runs count in n only. γ = 0: modes without a regularizer (drawn as horizontal references)."
)


def slug(metric: str) -> str:
    return metric.replace("/", "_")


def statistics(groups: dict[Key, list[Run]], metric: str) -> dict[Key, tuple[float, float, float]]:
    """(q25, median, q75) of the final ``metric`` per group, over the runs that did not diverge."""
    return {k: median_iqr([r.final(metric) for r in runs if not r.diverged]) for k, runs in groups.items()}


def table_rows(groups: dict[Key, list[Run]], metric: str | Sequence[str]) -> list[dict[str, object]]:
    """Per group: n, diverged, then median and IQR of the chosen metric(s) first, then of the test accuracies."""
    chosen = [metric] if isinstance(metric, str) else list(metric)
    return stats_table(groups, [*chosen, *(m for m in TABLE_METRICS if m not in chosen)], Run.final)


def figure(groups: dict[Key, list[Run]], metric: str | Sequence[str] = DEFAULT_METRIC) -> Figure:
    """Median and IQR band of the final ``metric`` against γ (log x), one line per (mode, schedule);
    given several metrics, one panel each (up to three in a row), the legend in the first."""
    metrics = [metric] if isinstance(metric, str) else list(metric)
    label = line_label(groups)
    lines = sorted({(m, s) for m, s, g in groups if g > 0})
    references = sorted({(m, s) for m, s, g in groups if g == 0})
    colour = {line: f"C{i % 10}" for i, line in enumerate(lines + [r for r in references if r not in lines])}
    cols = min(len(metrics), 3)
    rows = -(-len(metrics) // cols)
    fig = Figure(
        figsize=(6.4 if cols == 1 else 4.2 * cols, 4.4 if rows == 1 else 3.6 * rows), dpi=150, layout="constrained"
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(metrics) :]:
        fig.delaxes(ax)
    for ax, m in zip(axes, metrics):
        _panel(ax, groups, m, lines, references, colour, label)
        ax.set_title(f"final {m}: median and IQR over seeds" if len(metrics) == 1 else f"final {m}", fontsize=10)
    handles, _ = axes[0].get_legend_handles_labels()
    handles.append(Patch(color="grey", alpha=0.25, label="IQR over seeds"))
    if references:
        handles.append(Line2D([], [], color="grey", ls="--", label="mode without γ"))
    axes[0].legend(handles=handles, fontsize=7, loc="best")
    return fig


def _panel(ax, groups: dict[Key, list[Run]], metric: str, lines, references, colour, label) -> None:
    stats = statistics(groups, metric)
    for line in lines:
        keys = sorted((k for k in groups if k[:2] == line and k[2] > 0), key=lambda k: k[2])
        x = np.array([k[2] for k in keys])
        q25, med, q75 = (np.array([stats[k][i] for k in keys]) for i in range(3))
        ax.fill_between(x, q25, q75, color=colour[line], alpha=0.2, lw=0)
        ax.plot(x, med, "o-", color=colour[line], lw=1.8, ms=4, label=label(line))
    for line in references:
        q25, med, q75 = stats[(*line, 0.0)]
        ax.axhspan(q25, q75, color=colour[line], alpha=0.12, lw=0)
        ax.axhline(med, color=colour[line], ls="--", lw=1.5, label=f"{label(line)} (no γ)")
    ax.set_xscale("log")
    functional = any(r.gamma_f for runs in groups.values() for r in runs)
    ax.set_xlabel("γ (γ_f for augfn, nomfn)" if functional else "γ")
    ax.set_ylabel(f"final {metric}")
    ax.grid(True, which="major", alpha=0.3)


def vs_gamma_outputs(groups: dict[Key, list[Run]], metric: str, notes: list[str], out: Path) -> tuple[dict, str]:
    """The figure and its table for ``--vs gamma``: {path: content} and what to print.

    ``metric``: one metric, or several separated by commas (one panel each, ``vs_gamma_panels.*``).
    """
    metrics = [m.strip() for m in metric.split(",") if m.strip()]
    runs = [r for rs in groups.values() for r in rs]
    for m in metrics or [metric]:
        if not any(np.isfinite(r.final(m)) for r in runs):
            found = sorted({k for r in runs for k, v in r.metrics.items() if isinstance(v, (int, float)) and "/" in k})
            raise PlotError(
                f"--metric {m} is in no run's metrics.json; metrics found: {', '.join(found)} "
                f"(documented: {', '.join(METRICS)}; several: comma-separated)"
            )
    if not any(gamma > 0 for *_, gamma in groups):
        modes = sorted({m for m, _, _ in groups})
        raise PlotError(f"--vs gamma needs runs with a regularizer (γ > 0); found only {', '.join(modes)} (γ = 0)")
    fig = figure(groups, metrics[0] if len(metrics) == 1 else metrics)
    rows = table_rows(groups, metrics)
    table = markdown_table(rows)
    base = out / (f"vs_gamma_{slug(metrics[0])}" if len(metrics) == 1 else "vs_gamma_panels")
    extra = "".join(f"\n{n}" for n in notes) + ("\n" if notes else "")
    outputs = {
        base.with_suffix(".png"): fig,
        base.with_suffix(".pdf"): fig,
        base.with_suffix(".csv"): csv_text(rows),
        base.with_suffix(".md"): f"{table}\n{FOOTNOTE}\n{extra}",
    }
    return outputs, f"{table}\n{FOOTNOTE}"
