"""PNIL, the pixelwise noise-injection layer (Schwinn et al., "Towards Rapid and Robust
Adversarial Training with One-Step Attacks", Sec. 3.2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastnoise import _validation as v
from fastnoise.functional import pnil
from fastnoise.nn._shapes import as_sample_shape, check_sample_shape
from fastnoise.nn.base import NoiseLayer

# exp(-2 / 2) = 0.37 noise std on [0, 1] pixels: features the loss barely touches keep
# roughly their initial variance (PNIL Sec. 6), so this is how much background noise
# survives training, while the start stays learnable (exp(0) = 1 would bury the image).
DEFAULT_BIAS_INIT = -2.0


class PNIL(NoiseLayer):
    """``Sigma = x * weight + bias`` (Eq. 2), ``y = x + z * exp(Sigma / 2)`` (Eq. 3).

    ``weight`` and ``bias`` hold one value per input feature (one sample's shape, e.g.
    ``(C, H, W)``), so the layer learns where noise may go. Meant as the very first layer,
    on [0, 1] pixels.
    """

    def __init__(
        self,
        shape: Sequence[int] | torch.Size | int,
        weight_init: float = 0.0,
        bias_init: float = DEFAULT_BIAS_INIT,
    ) -> None:
        super().__init__()
        shape = as_sample_shape("shape", shape)
        for name, value in (("weight_init", weight_init), ("bias_init", bias_init)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        self.weight = nn.Parameter(torch.full(shape, float(weight_init)))
        self.bias = nn.Parameter(torch.full(shape, float(bias_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sample_shape(x, self.weight.shape, "PNIL")
        if not self.enabled:
            return x
        return pnil(x, self.weight, self.bias)

    @torch.no_grad()
    def variance_map(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """The noise variance exp(Sigma) of Eq. (2), for plots like PNIL Figures 1 and 3.

        ``x`` is a batch ``(N, *shape)`` or one sample ``shape``; None gives the variance
        at a black image (``exp(bias)``). The result is float32 and detached.
        """
        bias = self.bias.float()
        if x is None:
            return torch.exp(bias)
        v.check_tensor("x", x)
        if tuple(x.shape) != tuple(bias.shape):  # not one sample: must be a batch
            check_sample_shape(x, bias.shape, "PNIL")
        return torch.exp(x.float() * self.weight.float() + bias)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.weight.shape)}{self._enabled_repr()}"
