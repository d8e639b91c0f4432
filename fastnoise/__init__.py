"""fastnoise: fast, trustworthy noise-injection defenses for PyTorch.

Learn2Perturb perturbation-injection modules, PNI, PNIL and NFGSM, with fused kernels,
an attack suite built for randomized models, and a thin training layer.
"""

import importlib

from fastnoise import functional, rng
from fastnoise._dispatch import backends, set_backend, use_backend
from fastnoise.functional import inject_noise, pgd_step, pnil, random_start

__version__ = "0.1.0"

# Heavier subpackages load on first use, so `import fastnoise` stays quick.
_SUBPACKAGES = ("nn", "models", "data", "attacks", "eval", "train", "certify")

__all__ = [
    "functional",
    "rng",
    *_SUBPACKAGES,
    "inject_noise",
    "pnil",
    "pgd_step",
    "random_start",
    "set_backend",
    "use_backend",
    "backends",
    "__version__",
]


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"fastnoise.{name}")
    raise AttributeError(f"module 'fastnoise' has no attribute {name!r}")
