"""The networks of SPEC §1 and §8, with a leading seed axis on every weight, and their initial law A₀."""
