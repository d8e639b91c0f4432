"""Find a model's noise layers and split its parameters for the optimizer.

Noise parameters (theta, alpha, PNIL weight/bias) get their own parameter group: no
weight decay (Learn2Perturb A.4) and, in Learn2Perturb, their own alternating update.
"""

from __future__ import annotations

from torch import nn

from fastnoise.nn.base import NoiseLayer
from fastnoise.nn.perturbation import PerturbationInjection


def noise_modules(model: nn.Module) -> list[NoiseLayer]:
    """Every noise layer in ``model`` (including PNI weight parametrizations), in order."""
    return [m for m in model.modules() if isinstance(m, NoiseLayer)]


def noise_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the noise layers: theta, alpha, PNIL weight and bias."""
    seen: set[int] = set()
    params = []
    for module in noise_modules(model):
        for param in module.parameters():
            if id(param) not in seen:
                seen.add(id(param))
                params.append(param)
    return params


def weight_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every other parameter of ``model`` (convolutions, batch norm, classifier)."""
    noise_ids = {id(p) for p in noise_parameters(model)}
    return [p for p in model.parameters() if id(p) not in noise_ids]


def set_noise_enabled(model: nn.Module, enabled: bool) -> None:
    """Switch every noise layer of ``model`` on or off (off: the deterministic model)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    for module in noise_modules(model):
        module.enabled = enabled


def clamp_noise_(model: nn.Module) -> None:
    """:meth:`PerturbationInjection.clamp_` on every such module (after each step)."""
    for module in noise_modules(model):
        if isinstance(module, PerturbationInjection):
            module.clamp_()
