"""Training: the mode table (SPEC §4), typed settings, one SGD step for N seeds, the run's state, the loop."""
