"""fastnoise: fast, trustworthy noise-injection defenses for PyTorch.

Learn2Perturb perturbation-injection modules, PNI, PNIL and NFGSM, with fused kernels,
an attack suite built for randomized models, and a thin training layer.
"""

from fastnoise import functional, rng
from fastnoise._dispatch import backends, set_backend, use_backend
from fastnoise.functional import inject_noise, pgd_step, pnil, random_start

__version__ = "0.1.0"

__all__ = [
    "functional",
    "rng",
    "inject_noise",
    "pnil",
    "pgd_step",
    "random_start",
    "set_backend",
    "use_backend",
    "backends",
    "__version__",
]
