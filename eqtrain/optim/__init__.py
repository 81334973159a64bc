"""The update rules of SPEC §12 (optimizer.py): what a training step does with a gradient."""
