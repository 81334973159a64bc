"""eqtrain: train CNNs under a symmetry group and measure their distance to the equivariant subspace E."""

from .config import register_configs

__version__ = "0.1.0"

register_configs()
