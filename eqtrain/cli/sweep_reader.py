"""A sweep directory as eqtrain-plot reads it: its runs, grouped, checked for one setting, and tables.

A sweep (``eqtrain -m mode=nomreg,augreg gamma=0.1,1 'seed=range(30)'``, or jobs of ``seeds=N``
holding ``seed=<s>/`` directories) leaves one run directory per seed, each with TensorBoard event
files and ``metrics.json``. Runs are grouped by (mode, γ schedule, γ), the mode named after the
model in a sweep over models (``z2cnn augmented``); the seeds are the repetitions. Anything else that differs between runs (dataset, lr, ...) makes the medians
meaningless, so such a "mixed" directory is refused rather than plotted.

Damaged inputs (docs/design.md, "Damaged files"): a run whose metrics.json or every event file is
unreadable is skipped with a note; a run whose event file is cut short or fails a CRC is drawn as
far as TensorBoard's reader gets, and its final values come from its metrics.json. Notes go to
stderr and into the written tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..run.files import EVENTS_GLOB, METRICS_FILE, run_dirs_below, write_atomic

GROUP_KEYS = ("mode", "gamma")  # with the γ schedule: one curve family / line / table row per group
SCHEDULE_KEYS = ("gamma_schedule", "gamma_start", "gamma_ramp")  # a ramp is its own group
# the function-space penalty's (augfn, nomfn): γ_f is such a run's γ, and a choice of layers other than the
# logits its own group, as a ramp is
FUNCTION_KEYS = ("gamma_f", "gamma_f_layers")
REPEAT_KEYS = ("seed",)  # the repetitions a median is taken over
MODEL_KEY = "model"  # a sweep may compare models: their own keys then follow the model's name
MODEL_HPARAMS = (  # the hparams a model preset sets (settings.hparams_of): may differ between models
    "support", "parametrization", "channels", "fibers", "kernel_size", "activation", "pool", "pool_kind",
    "stride", "padding", "layernorm", "norm", "group_pool", "bias", "basis_seed",
)  # fmt: skip
CONSTANT = "constant"

Key = tuple[str, str, float]  # (mode, schedule, γ)


class PlotError(Exception):
    """A problem with the user's input, reported as one line and exit status 2."""


class SkipRun(Exception):
    """A run directory that cannot be used; the message is the note the user gets."""


@dataclass
class Run:
    path: Path
    hparams: dict
    status: str
    metrics: dict  # metrics.json: the final values
    scalars: dict[str, tuple[np.ndarray, np.ndarray]]  # tag -> (steps, values), in file order
    damaged: bool = False  # the event files end early: final values from metrics.json
    notes: list[str] = field(default_factory=list)
    named_by_model: bool = False  # the sweep compares models: the group's name starts with the model's

    @property
    def mode(self) -> str:
        """The run's line name: its mode, e.g. ``augreg``, or ``z2cnn augmented`` in a sweep over models."""
        mode = str(self.hparams["mode"])
        return f"{self.hparams.get(MODEL_KEY)} {mode}" if self.named_by_model else mode

    @property
    def gamma(self) -> float:
        """The strength of the run's regularizer: γ, or γ_f in a function-penalized run (augfn, nomfn)."""
        return self.weight_gamma or self.gamma_f

    @property
    def weight_gamma(self) -> float:
        """γ of γΓ (0 in a run without it)."""
        return float(self.hparams["gamma"])

    @property
    def gamma_f(self) -> float:
        return float(self.hparams.get("gamma_f") or 0.0)

    @property
    def schedule(self) -> str:
        """``constant``, or the ramp, e.g. ``exp ramp from 0.01 over 5 epochs``; a run without γ has none. A
        function-penalized run's: ``constant`` on the logits, else its layers (``on conv6,logits``)."""
        if self.gamma_f and not self.weight_gamma:
            layers = str(self.hparams.get("gamma_f_layers", "logits"))
            return CONSTANT if layers == "logits" else f"on {layers}"
        kind = str(self.hparams.get("gamma_schedule", CONSTANT))
        if kind == CONSTANT or self.gamma == 0:
            return CONSTANT
        return f"{kind} ramp from {float(self.hparams.get('gamma_start', 0.0)):g} over {self.hparams.get('gamma_ramp', '?')}"

    @property
    def key(self) -> Key:
        return self.mode, self.schedule, self.gamma

    @property
    def diverged(self) -> bool:
        """Diverged or interrupted: its last values are not a finished run's, so no statistics."""
        return self.status in ("diverged", "interrupted")

    def last(self, tag: str) -> float:
        """The tag's last value in the event file (NaN when never logged); metrics.json's if the file ends early."""
        if self.damaged:
            return self.final(tag)
        values = self.scalars.get(tag, (None, np.array([])))[1]
        return float(values[-1]) if values.size else math.nan

    def final(self, key: str) -> float:
        """The final value in metrics.json (NaN when absent; "nan"/"inf" strings as floats)."""
        value = self.metrics.get(key)
        try:
            return float(value) if value is not None and not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            return math.nan

    def identity(self) -> str:
        """The hparams that make two runs the same run (a run without γ has no schedule)."""
        hp = dict(self.hparams)
        if self.weight_gamma == 0:
            for k in SCHEDULE_KEYS:
                hp.pop(k, None)
        return json.dumps(hp, sort_keys=True, default=str)


# --- reading ---------------------------------------------------------------------------------


def find_run_dirs(root: Path) -> tuple[list[Path], list[Path]]:
    """(finished run directories, directories with event files but no metrics.json) under root."""
    event_dirs = run_dirs_below(root)
    finished = [d for d in event_dirs if (d / METRICS_FILE).is_file()]
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


def read_metrics(run_dir: Path) -> dict:
    path = run_dir / METRICS_FILE
    try:
        metrics = json.loads(path.read_bytes().decode())
    except UnicodeDecodeError as err:
        raise SkipRun(f"skipped {run_dir}: its {METRICS_FILE} is damaged (not text, byte {err.start})") from err
    except json.JSONDecodeError as err:
        what = "empty" if not err.doc.strip() else f"damaged ({err.msg} at line {err.lineno})"
        raise SkipRun(f"skipped {run_dir}: its {METRICS_FILE} is {what}; restore it or rerun the run") from err
    except OSError as err:
        raise SkipRun(f"skipped {run_dir}: cannot read its {METRICS_FILE} ({err.strerror or err})") from err
    hparams = metrics.get("hparams") if isinstance(metrics, dict) else None
    if not isinstance(hparams, dict) or any(k not in hparams for k in GROUP_KEYS):
        raise SkipRun(
            f"skipped {run_dir}: its {METRICS_FILE} is not an eqtrain run's (no hparams with "
            f"{' and '.join(GROUP_KEYS)})"
        )
    try:
        float(hparams["gamma"])
    except (TypeError, ValueError) as err:
        raise SkipRun(f"skipped {run_dir}: its {METRICS_FILE} has gamma={hparams['gamma']!r}, not a number") from err
    return metrics


def check_events(run_dir: Path) -> list[str]:
    """Notes on the run's event files that TensorBoard's reader cannot read to the end; SkipRun if none is usable."""
    from ..run.events import check_event_file

    notes, usable = [], 0
    for path in sorted(run_dir.glob(EVENTS_GLOB)):
        if not path.is_file():  # TensorBoard's reader would stop the whole plot with a traceback
            raise SkipRun(f"skipped {run_dir}: {path.name} is not a file")
        check = check_event_file(path)
        if not check.is_events:
            notes.append(f"{path} is not a TensorBoard event file ({check.problem or 'no event header'})")
            continue
        usable += 1
        if check.problem:
            notes.append(f"{path}: {check.problem}; TensorBoard's reader stops there")
    if not usable:
        raise SkipRun(f"skipped {run_dir}: {notes[0]}")
    return notes


def load_run(run_dir: Path) -> Run:
    metrics = read_metrics(run_dir)
    notes = check_events(run_dir)
    run = Run(run_dir, metrics["hparams"], str(metrics.get("status", "completed")), metrics, read_scalars(run_dir))
    if notes:
        run.damaged, last = True, max((int(s[-1]) for s, _ in run.scalars.values() if s.size), default=None)
        drawn = f"drawn up to step {last}" if last is not None else "not drawn"
        run.notes = [f"{n}: the run is {drawn}, its final values come from {METRICS_FILE}" for n in notes]
    return run


def check_one_setting(runs: list[Run], root: Path) -> None:
    """Refuse runs that differ in more than mode, γ (and its schedule) and seed: their medians would mix settings.

    A sweep over models (``model=p4cnn,z2cnn``) may differ in the model's own keys too (its channels,
    fibers, ...), as long as the runs of one model agree on them: its groups are named after the model.
    """
    differing = settings_that_differ(runs)
    if differing:
        raise PlotError(
            f"{root} mixes runs that differ in more than mode, gamma (and its schedule) and seed: "
            + "; ".join(f"{key} = {found}" for key, found in differing.items())
            + " (plot each setting from its own directory)"
        )


def settings_that_differ(runs: list[Run]) -> dict[str, str]:
    """Every hparam beyond mode, γ (and its schedule), seed and a model's own keys in which the runs differ, with
    its values (``value (n runs), ...``): what ``check_one_setting`` refuses."""
    ignored = set(GROUP_KEYS) | set(SCHEDULE_KEYS) | set(REPEAT_KEYS) | set(FUNCTION_KEYS)
    keys = sorted(set().union(*(r.hparams for r in runs)) - ignored)
    by_model = compares_models(runs)
    differing = {}
    for key in keys:
        if by_model and key in (MODEL_KEY, *MODEL_HPARAMS) and _follows_model(runs, key):
            continue
        counts = Counter(_show(r.hparams.get(key, "<missing>")) for r in runs)
        if len(counts) > 1:
            differing[key] = ", ".join(f"{v} ({n} run{'s' * (n > 1)})" for v, n in sorted(counts.items()))
    return differing


def compares_models(runs: list[Run]) -> bool:
    """Whether the runs are of more than one model (a sweep over ``model=``)."""
    return len({_show(r.hparams.get(MODEL_KEY)) for r in runs}) > 1


def _follows_model(runs: list[Run], key: str) -> bool:
    """Whether all runs of one model agree on ``key``."""
    values: dict[str, set[str]] = {}
    for r in runs:
        values.setdefault(_show(r.hparams.get(MODEL_KEY)), set()).add(_show(r.hparams.get(key, "<missing>")))
    return all(len(v) == 1 for v in values.values())


def drop_duplicates(runs: list[Run]) -> tuple[list[Run], int]:
    """Keep one run per identical hparams: a sweep over γ repeats modes without regularizer (γ = 0)."""
    kept: dict[str, Run] = {}
    for run in runs:
        kept.setdefault(run.identity(), run)
    return list(kept.values()), len(runs) - len(kept)


def group_runs(runs: list[Run]) -> dict[Key, list[Run]]:
    """Runs by (mode, schedule, γ), sorted by γ, mode, then constant before ramps; each group by seed."""
    groups: dict[Key, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.key, []).append(run)
    return {
        k: sorted(groups[k], key=lambda r: _show(r.hparams.get("seed")))
        for k in sorted(groups, key=lambda k: (k[2], k[0], k[1] != CONSTANT, k[1]))
    }


def load_sweep(root: Path) -> tuple[dict[Key, list[Run]], list[str]]:
    """The runs under root grouped by (mode, schedule, γ), and notes for the user; PlotError if unusable."""
    if not root.exists():
        raise PlotError(f"{root} does not exist")
    if not root.is_dir():
        raise PlotError(f"{root} is a file, not a directory: pass the sweep or run directory that holds it")
    try:
        run_dirs, unfinished = find_run_dirs(root)
    except OSError as err:
        raise PlotError(f"cannot read {root} ({err.strerror or err})") from err
    if not run_dirs:
        raise PlotError(f"no eqtrain runs under {root} (looked for directories with {EVENTS_GLOB} and metrics.json)")
    runs, skipped = [], []
    for d in run_dirs:
        try:
            runs.append(load_run(d))
        except SkipRun as note:
            skipped.append(str(note))
    if not runs:
        raise PlotError(f"no readable eqtrain runs under {root}: {skipped[0]}")
    runs, duplicates = drop_duplicates(runs)
    check_one_setting(runs, root)
    if compares_models(runs):
        for run in runs:
            run.named_by_model = True
    notes = [f"note: skipped {len(unfinished)} unfinished run(s) without metrics.json"] if unfinished else []
    notes += [f"note: {n}" for n in skipped]
    if duplicates:
        notes.append(f"note: ignored {duplicates} run(s) with the same hparams as another run")
    notes += [f"note: {n}" for r in runs for n in r.notes]
    return group_runs(runs), notes


def _show(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# --- statistics and tables -------------------------------------------------------------------


def median_iqr(values: list[float]) -> tuple[float, float, float]:
    """(q25, median, q75) of the values (NaN when there are none)."""
    finals = np.array(values, dtype=np.float64)
    return tuple(float(v) for v in np.percentile(finals, [25, 50, 75])) if finals.size else (math.nan,) * 3


def with_schedule(groups: dict[Key, list[Run]]) -> bool:
    """Whether any group is a ramp: tables then get a ``schedule`` column (else every row would say constant)."""
    return any(schedule != CONSTANT for _, schedule, _ in groups)


def row_head(key: Key, runs: list[Run], schedule_column: bool) -> dict[str, object]:
    mode, schedule, gamma = key
    row: dict[str, object] = {"mode": mode}
    if schedule_column:
        row["schedule"] = schedule
    row.update({"gamma": gamma, "n": len(runs), "diverged": sum(r.diverged for r in runs)})
    return row


def stats_table(groups: dict[Key, list[Run]], tags: Sequence[str], value: Callable[[Run, str], float]) -> list[dict]:
    """Per group: mode, (schedule), γ, n, how many diverged, then for each tag the median and IQR of
    ``value(run, tag)`` over the runs that did not diverge (their values are where the loss blew up)."""
    rows, schedule_column = [], with_schedule(groups)
    for key, runs in groups.items():
        row = row_head(key, runs, schedule_column)
        kept = [r for r in runs if not r.diverged]
        for tag in tags:
            q25, med, q75 = median_iqr([value(r, tag) for r in kept])
            row[f"{tag} median"], row[f"{tag} IQR"] = med, q75 - q25
        rows.append(row)
    return rows


def line_label(groups: dict[Key, list[Run]]):
    """(mode, schedule) -> legend label: the mode, with ``(exp ramp)`` for a ramp (in full when ambiguous)."""
    lines = sorted({(m, s) for m, s, _ in groups})
    kinds = [(m, s.split(" ")[0]) for m, s in lines if s != CONSTANT]

    def label(line: tuple[str, str]) -> str:
        mode, schedule = line
        if schedule == CONSTANT:
            return mode
        kind = schedule.split(" ")[0]
        return f"{mode} ({kind} ramp)" if kinds.count((mode, kind)) == 1 else f"{mode} ({schedule})"

    return label


def csv_text(rows: list[dict[str, object]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)  # floats at full precision (repr); the Markdown table rounds
    return out.getvalue()


def markdown_table(rows: list[dict[str, object]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join("γ" if c == "gamma" else c for c in columns) + " |"]
    lines.append("|" + "|".join("---" if c in ("mode", "schedule") else "---:" for c in columns) + "|")
    for row in rows:
        cells = [_cell(c, row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(column: str, value: object) -> str:
    if column == "gamma":
        return f"{value:g}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_outputs(outputs: dict[Path, object]) -> None:
    """Write each output (text, or a Figure) atomically: a failed write leaves the previous file whole."""
    for path, content in outputs.items():
        if isinstance(content, str):
            write_atomic(path, lambda tmp, text=content: tmp.write_text(text))
        else:
            write_atomic(path, lambda tmp, fig=content, kind=path.suffix[1:]: fig.savefig(tmp, format=kind))
