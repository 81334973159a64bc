"""eqtrain's Hydra plugin: the grid sweeper that trains each γ-free mode once (eqtrain/cli/sweeper.py)."""
