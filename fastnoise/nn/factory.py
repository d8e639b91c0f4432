"""Build the noise layer that a model or :func:`add_perturbation_modules` asks for."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from fastnoise.nn.perturbation import PerturbationInjection
from fastnoise.nn.pni import ParametricNoiseInjection

# "pni-w" puts PNI on the weights of every conv/linear instead of on activations.
NOISE_KINDS = ("l2p", "pni", "pni-w")


def check_noise_kind(kind: str | None) -> str | None:
    if kind is not None and kind not in NOISE_KINDS:
        raise ValueError(f"noise must be None or one of {NOISE_KINDS}, got {kind!r}")
    return kind


def noise_layer(
    kind: str | None,
    shape: Sequence[int],
    *,
    init: float = 0.25,
    theta_min: float = 0.01,
    pni_mode: str = "layer",
) -> nn.Module:
    """The activation-noise layer for an output of one-sample ``shape`` (C, H, W).

    ``None`` and ``"pni-w"`` (noise on weights, not activations) give ``nn.Identity``.
    """
    check_noise_kind(kind)
    if kind == "l2p":
        return PerturbationInjection(shape, init=init, theta_min=theta_min)
    if kind == "pni":
        channels = shape[0] if pni_mode == "channel" else None
        return ParametricNoiseInjection(pni_mode, channels=channels, init=init)
    return nn.Identity()
