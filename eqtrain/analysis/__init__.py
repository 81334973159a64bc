"""Stability of E: the Hessian of R^aug on E⊥ and on E, γ_crit and the SGD window (SPEC §5.4, §5.6)."""
