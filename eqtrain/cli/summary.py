"""What the console shows when a run or a sweep ends: what changed, and where to look next."""

from __future__ import annotations

import json
import statistics
import urllib.parse
from pathlib import Path

from ..run.files import METRICS_FILE


def _median(results: list[dict], key: str) -> float:
    values = [r[key] for r in results if isinstance(r.get(key), (int, float))]
    return statistics.median(values) if values else float("nan")


def shown(path: Path) -> Path:
    """A path as the user would type it: relative to the working directory when it lies below it."""
    path = Path(path).absolute()
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


# The curves a user opens TensorBoard for (SPEC §7): pinned above the Time Series tab's sections, which
# TensorBoard sorts by tag name (acc/* would come first). TensorBoard reads pins from the page's address.
PINNED = ("dist_to_E/total", "dist_to_E_rel/total")


def curves_url(port: int = 6006) -> str:
    """TensorBoard's address with the distance to E pinned on top of the Time Series tab."""
    cards = json.dumps([{"plugin": "scalars", "tag": tag} for tag in PINNED], separators=(",", ":"))
    return f"http://localhost:{port}/?pinnedCards={urllib.parse.quote(cards)}#timeseries"


def strength(hp: dict) -> str:
    """The run's regularizer and its strength as its summary names them: ``gamma=10``, or ``gamma_f=1`` for a
    function-penalized run (augfn, nomfn), whose γ is 0."""
    gamma, gamma_f = float(hp.get("gamma", 0)), float(hp.get("gamma_f") or 0)
    return f"gamma_f={gamma_f:g}" if gamma_f and not gamma else f"gamma={gamma:g}"


def run_summary(result: dict, run_dir: Path) -> str:
    """A few lines: mode, γ, group, status; d(A) and d/‖A‖ from start to end; the accuracies; the files."""
    run_dir = shown(run_dir)
    runs = result.get("runs", [result])
    hp = runs[0]["hparams"]
    statuses = sorted({r["status"] for r in runs})
    over = f" (median over {len(runs)} seeds)" if len(runs) > 1 else ""
    m = {key: _median(runs, key) for key in runs[0] if isinstance(runs[0][key], (int, float))}
    return "\n".join(
        [
            f"eqtrain: {hp['mode']}, {strength(hp)}, group={hp['group']}: {'/'.join(statuses)} "
            f"after {runs[0]['steps']} steps{over}",
            f"  d(A)  {m.get('dist_to_E/start', float('nan')):.4g} -> {m['dist_to_E/total']:.4g}"
            f"    d(A)/|A|  {m.get('dist_to_E_rel/start', float('nan')):.4g} -> {m['dist_to_E_rel/total']:.4g}",
            f"  acc/test {m['acc/test']:.4f}   acc/test_orbit {m['acc/test_orbit']:.4f}   "
            f"equiv/test_error {m['equiv/test_error']:.4g}",
            f"  run directory: {run_dir}",
            f"  curves: tensorboard --logdir {run_dir}",
            f"  then open {curves_url()}",
        ]
    )


def sweep_summary(sweep_dir: Path) -> str:
    """One line per run of the sweep (a job, or each seed of a job), then the commands for the figure and curves."""
    lines, sweep_dir, hparams = [f"eqtrain: sweep in {shown(sweep_dir)}"], Path(sweep_dir), []
    for path in sorted(sweep_dir.rglob(METRICS_FILE)):
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            lines.append(f"  {path.parent.relative_to(sweep_dir)}: unreadable {METRICS_FILE}")
            continue
        hp = r.get("hparams", {})
        hparams.append((path.parent, hp))
        if r.get("status") not in ("completed", "diverged"):
            lines.append(f"  {path.parent.relative_to(sweep_dir)}: {r.get('status')} at step {r.get('steps')}")
            continue
        lines.append(
            f"  {path.parent.relative_to(sweep_dir)}: {hp.get('mode')} {strength(hp)} {r['status']}, "
            f"d(A) {r.get('dist_to_E/start', float('nan')):.3g} -> {r['dist_to_E/total']:.3g}, "
            f"acc/test {r['acc/test']:.3f}, acc/test_orbit {r['acc/test_orbit']:.3f}"
        )
    lines.append(figure_command(sweep_dir, hparams))
    lines.append(f"  curves: tensorboard --logdir {shown(sweep_dir)}")
    lines.append(f"  then open {curves_url()}")
    return "\n".join(lines)


def figure_command(sweep_dir: Path, hparams: list[tuple[Path, dict]]) -> str:
    """The eqtrain-plot command for the sweep's figure: for the whole sweep, or, where its jobs differ in more than
    eqtrain-plot compares (mode, γ, seed, model: a recipe search), one per job, naming what differs."""
    from .sweep_reader import Run, settings_that_differ

    runs = [Run(path, hp, "completed", {}, {}) for path, hp in hparams if isinstance(hp, dict)]
    differing = list(settings_that_differ(runs)) if runs else []
    if not differing:
        return f"  figure and table: eqtrain-plot {shown(sweep_dir)}"
    return (
        f"  figure and table, one per job (its jobs differ in {', '.join(differing)}): "
        f"eqtrain-plot {shown(sweep_dir)}/<job>"
    )
