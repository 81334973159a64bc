"""eqtrain: train CNNs under a symmetry group and measure their distance to the equivariant subspace E.

Importing the package is cheap (no torch): the command line checks its arguments before the heavy
imports. The layers, bottom to top: ``schema`` → ``geometry`` → ``nets`` → ``data`` → ``run`` →
``analysis`` → ``training`` → ``cli``; each imports only from layers below it. This file is the front
door above them all: ``eqtrain.train([...])`` (``cli/python_api.py``) is loaded when first used.
"""

__version__ = "0.2.0"
__all__ = ["train", "RunResult", "ConfigError"]


def __getattr__(name: str):
    if name in __all__:
        from .cli import python_api

        return getattr(python_api, name)
    raise AttributeError(f"module 'eqtrain' has no attribute {name!r}")
