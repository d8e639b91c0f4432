"""Every training method by its ``TrainConfig.method`` name."""

from __future__ import annotations

from torch import nn

from fastnoise.train.config import TrainConfig
from fastnoise.train.gaussian import GaussianAugmentation
from fastnoise.train.methods import (
    NFGSM,
    PGDAT,
    PNI,
    RFGSM,
    Learn2Perturb,
    Learn2PerturbR,
    Standard,
    TrainingMethod,
)

__all__ = ["build_method"]

_METHODS: dict[str, type[TrainingMethod]] = {
    "standard": Standard,
    "pgd-at": PGDAT,
    "rfgsm": RFGSM,
    "nfgsm": NFGSM,
    "pni": PNI,
    "learn2perturb": Learn2Perturb,
    "learn2perturb-r": Learn2PerturbR,
    "gaussian": GaussianAugmentation,
}


def build_method(config: TrainConfig, model: nn.Module, **kwargs) -> TrainingMethod:
    """The training method ``config.method`` for ``model`` (unwrapped)."""
    return _METHODS[config.method](config, model, **kwargs)
