"""The paper's figure and a summary table from a sweep directory (same as the `eqtrain-plot` command)."""

from eqtrain.cli.plot import main

raise SystemExit(main())
