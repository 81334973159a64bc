"""eqtrain: train CNNs under a symmetry group and measure their distance to the equivariant subspace E.

Importing the package is cheap (no torch): the command line checks its arguments before the heavy
imports. The layers, bottom to top: ``schema`` → ``geometry`` → ``nets`` → ``data`` → ``run`` →
``analysis`` → ``training`` → ``cli``; each imports only from layers below it.
"""

__version__ = "0.2.0"
