"""eqtrain-analyze: is E an attractor at a finished run's weights? γ_crit and the window of the run's optimizer
(SPEC §5.4, §12.4)."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from ..run.files import STABILITY_FILE, writable_problem


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eqtrain-analyze",
        description="Stability of E at a finished run's weights: extreme eigenvalues of the Hessian of R^aug "
        "on E-perp and on E, gamma_crit and the window of gamma for the run's optimizer (SPEC §5.4, §12.4). "
        "Writes RUN_DIR/stability.json and stability/* scalars to the run's TensorBoard.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished eqtrain run directory")
    parser.add_argument("--samples", type=int, default=256, help="first N training images (default 256)")
    parser.add_argument("--iterations", type=int, default=40, help="Lanczos steps per block (default 40)")
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="step size of the window (default: the run's lr, the peak of its schedule)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the Lanczos start vector (default 0)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to compute (default cpu)")
    parser.add_argument(
        "--data-dir", default=None, help="where the MNIST-family files are (default: the run's dataset.data_dir)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``eqtrain-analyze RUN_DIR [--samples N] [--iterations K] [--lr LR]``; 0 on success, 2 on a bad input."""
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:  # off a terminal (SLURM, a log file) its progress comes as log lines
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch  # only once the command line parsed: --help stays fast
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    from ..analysis.stability import analyze_run, summary
    from ..data.datasets import DataDamaged, DataUnavailable
    from ..training.analyze import optimizer_of_run
    from ..training.finished_run import RestoreError, restore

    def fail(message: str) -> int:
        print("eqtrain-analyze: error: " + " ".join(message.split()), file=sys.stderr)  # one line
        return 2

    if args.samples < 1 or args.iterations < 1:
        return fail(f"--samples={args.samples} and --iterations={args.iterations} must be positive ints")
    if args.device == "cuda" and not torch.cuda.is_available():
        return fail("--device=cuda is not valid: no CUDA GPU is visible to torch; use --device cpu")
    run_dir = Path(args.run_dir)
    try:
        restored = restore(run_dir, args.device, args.data_dir)
    except RestoreError as err:  # a damaged, foreign or missing file: the message says which and what to do
        return fail(str(err))
    except DataUnavailable as err:  # a damaged file is named; missing data may just have moved
        return fail(str(err) if isinstance(err, DataDamaged) else f"{err} (eqtrain-analyze: --data-dir DIR)")
    except (OSError, ValueError, KeyError, RuntimeError, OmegaConfBaseException, YAMLError) as err:
        return fail(f"cannot restore the run in {str(run_dir)!r}: {err}")
    problem = unwritable(run_dir)  # before minutes of Lanczos, not after
    if problem:
        return fail(
            f"cannot write {STABILITY_FILE} into {str(run_dir)!r} ({problem}); analyze a copy of the run directory"
        )
    optimizer = optimizer_of_run(restored.settings, args.lr)  # the run's update rule, its gamma and lr
    if not (math.isfinite(optimizer["lr"]) and optimizer["lr"] > 0):
        return fail(f"--lr={optimizer['lr']!r} is not valid: use a finite number > 0")
    result = analyze_run(
        restored.model,
        restored.data,
        restored.group,
        run_dir=run_dir,
        step=restored.step,
        samples=args.samples,
        iterations=args.iterations,
        seed=args.seed,
        data_scale=restored.settings.config.data_scale,
        **optimizer,
    )
    print(summary(result))
    print(f"-> {run_dir / STABILITY_FILE}")
    return 0


def unwritable(run_dir: Path) -> str | None:
    """Why the results cannot be written into ``run_dir`` (None when they can)."""
    problem = writable_problem(run_dir)
    if problem:
        return problem
    stability = run_dir / STABILITY_FILE
    if stability.exists() and not stability.is_file():
        return f"{stability} is not a file"
    return None


if __name__ == "__main__":
    sys.exit(main())
