"""Benchmark eqtrain's training step against the unconstrained floor (same as `eqtrain-bench`)."""

from eqtrain.cli.bench import main

if __name__ == "__main__":
    main()
