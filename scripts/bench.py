"""Benchmark eqtrain's training step against the unconstrained floor (same as `eqtrain-bench`)."""

from eqtrain.bench import main

if __name__ == "__main__":
    main()
