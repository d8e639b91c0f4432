"""Parametric Noise Injection (He, Rakin and Fan, CVPR 2019), the Learn2Perturb baseline.

``v' = v + alpha * eta`` with ``eta ~ N(0, std(v)^2)`` and a learnable ``alpha``, on
activations (:class:`ParametricNoiseInjection`) or on weights (:func:`pni_weight`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from fastnoise import _validation as v
from fastnoise.functional import inject_noise
from fastnoise.nn.base import NoiseLayer

PNI_MODES = ("layer", "channel")


class ParametricNoiseInjection(NoiseLayer):
    """``y = x + |alpha| * std(x) * z``, z ~ N(0, 1) per element.

    ``mode="layer"``: one scalar ``alpha``; ``mode="channel"``: one per channel (dim 1 of
    ``x``, give ``channels``). ``std(x)`` is each sample's own (over its elements),
    detached as in PNI's code, and stays a tensor: the forward never waits on the device.
    PNI's code takes it over the whole batch, which lets the other rows of a batch (other
    samples, or the copies of an EOT pass) change a sample's noise; per sample, a sample's
    output depends on its own draw alone.

    Sign of alpha: PNI leaves alpha unconstrained; ``alpha * z`` and ``|alpha| * z`` have
    the same law, so we pass ``|alpha| * std`` as the non-negative sigma of
    :func:`fastnoise.inject_noise` (its gradient is ``sign(alpha)`` times PNI's).
    """

    def __init__(self, mode: str = "layer", channels: int | None = None, init: float = 0.25):
        super().__init__()
        if mode not in PNI_MODES:
            raise ValueError(f"mode must be one of {PNI_MODES}, got {mode!r}")
        if mode == "channel":
            if channels is None:
                raise ValueError('channels is required when mode="channel"')
            v.check_positive_int("channels", channels)
        elif channels is not None:
            raise ValueError('channels is only used with mode="channel"')
        init = v.check_non_negative_number("init", init)
        self.mode = mode
        self.alpha = nn.Parameter(torch.full((channels,) if mode == "channel" else (), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v.check_tensor("x", x)
        if self.mode == "channel" and (x.dim() < 2 or x.shape[1] != self.alpha.numel()):
            raise ValueError(
                f"x must have shape (N, {self.alpha.numel()}, ...) for this "
                f"ParametricNoiseInjection, got {tuple(x.shape)}"
            )
        if not self.enabled or x.numel() == 0:
            return x
        if x.shape[0] == 1:  # one sample (a weight, or a batch of one): one sigma
            return inject_noise(x, self.noise_std(x)[0])
        # Per-sample sigma: |alpha| * z from the fused op (sigma broadcasts over one sample
        # only), scaled by each sample's std: y = x + std_n * (|alpha| * z).
        scaled_z = inject_noise(torch.zeros_like(x), self._scale(x))
        std = self.sample_std(x).to(x.dtype).view((-1,) + (1,) * (x.dim() - 1))
        return torch.addcmul(x, std, scaled_z)

    def sample_std(self, x: torch.Tensor) -> torch.Tensor:
        """Each sample's population std (``correction=0``: a one-element sample gives 0,
        not NaN), detached, float32, shape ``(N,)``."""
        return x.detach().float().flatten(1).std(dim=1, correction=0)

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.alpha.abs()
        if self.mode == "channel":
            scale = scale.view((-1,) + (1,) * (x.dim() - 2))
        return scale

    def noise_std(self, x: torch.Tensor) -> torch.Tensor:
        """``|alpha| * std(x_n)`` per sample: the sigma of each sample's noise, shape
        ``(N, *scale)``, a tensor (no host sync)."""
        std = self.sample_std(x).view((-1,) + (1,) * self._scale(x).dim())
        return self._scale(x).unsqueeze(0) * std

    def extra_repr(self) -> str:
        channels = f", channels={self.alpha.numel()}" if self.mode == "channel" else ""
        return f"mode={self.mode!r}{channels}{self._enabled_repr()}"


class ParametricWeightNoise(ParametricNoiseInjection):
    """PNI on weights (PNI-W) as a parametrization: ``W' = W + |alpha| * std(W) * z``,
    drawn afresh each time the module reads its weight. ``mode="channel"`` gives one
    alpha per output channel."""

    draws_per_row = False  # one weight draw per forward, shared by every row of the batch

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # The weight is one "sample": a batch of one keeps it all in one noise draw.
        return super().forward(weight.unsqueeze(0)).squeeze(0)


def pni_weight(
    module: nn.Module, mode: str = "layer", init: float = 0.25, name: str = "weight"
) -> nn.Module:
    """Add PNI weight noise to ``module`` (a conv or linear layer) in place; returns it.

    The learnable alpha lives at ``module.parametrizations.weight[0].alpha``; the clean
    weight at ``module.parametrizations.weight.original``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 1:
        raise ValueError(f"module must have a tensor attribute {name!r}, got {type(weight)}")
    channels = weight.shape[0] if mode == "channel" else None
    noise = ParametricWeightNoise(mode, channels, init).to(weight.device)
    parametrize.register_parametrization(module, name, noise)
    return module


def add_weight_noise(
    model: nn.Module,
    mode: str = "layer",
    init: float = 0.25,
    layer_types: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear),
) -> nn.Module:
    """:func:`pni_weight` on every layer of ``layer_types`` in ``model`` (PNI-W)."""
    targets = [m for m in model.modules() if isinstance(m, layer_types)]
    for module in targets:
        if not parametrize.is_parametrized(module, "weight"):
            pni_weight(module, mode, init)
    return model
