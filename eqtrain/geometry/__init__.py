"""The geometry of SPEC §1–§3: the group G, supports ω and L, the projections onto E, parametrizations."""
