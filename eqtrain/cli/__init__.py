"""The command-line tools: eqtrain (Hydra), eqtrain-plot, eqtrain-bench, eqtrain-analyze."""
