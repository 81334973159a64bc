"""In-memory datasets (SPEC §6) and the group's data augmentation (SPEC §4)."""
