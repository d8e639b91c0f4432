"""Noise-injection layers: Learn2Perturb, PNI, PNIL, plus input normalization."""

from fastnoise.nn.base import NoiseLayer
from fastnoise.nn.factory import NOISE_KINDS, noise_layer
from fastnoise.nn.groups import (
    clamp_noise_,
    noise_modules,
    noise_parameters,
    set_noise_enabled,
    weight_parameters,
)
from fastnoise.nn.inject import add_perturbation_modules
from fastnoise.nn.normalize import Normalize
from fastnoise.nn.perturbation import PerturbationInjection
from fastnoise.nn.pni import (
    ParametricNoiseInjection,
    ParametricWeightNoise,
    add_weight_noise,
    pni_weight,
)
from fastnoise.nn.pnil import PNIL

__all__ = [
    "NOISE_KINDS",
    "NoiseLayer",
    "Normalize",
    "PNIL",
    "ParametricNoiseInjection",
    "ParametricWeightNoise",
    "PerturbationInjection",
    "add_perturbation_modules",
    "add_weight_noise",
    "clamp_noise_",
    "noise_layer",
    "noise_modules",
    "noise_parameters",
    "pni_weight",
    "set_noise_enabled",
    "weight_parameters",
]
