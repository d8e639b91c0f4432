"""Learn2Perturb's perturbation-injection module (Jeddi et al., CVPR 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastnoise import _validation as v
from fastnoise.functional import inject_noise_abs
from fastnoise.nn._shapes import as_sample_shape, check_sample_shape
from fastnoise.nn.base import NoiseLayer


class PerturbationInjection(NoiseLayer):
    """``y = x + theta * z``, z ~ N(0, 1) drawn per sample and per feature (Eq. 4-5).

    ``theta`` is a learnable standard deviation of one sample's shape (e.g. ``(C, H, W)``),
    initialised to ``init``. Unlike the released Learn2Perturb code, which broadcast one
    draw over the batch, every sample gets its own noise. Call :meth:`clamp_` after each
    optimizer step to keep ``theta >= theta_min``.
    """

    def __init__(
        self, shape: Sequence[int] | torch.Size | int, init: float = 0.25, theta_min: float = 0.01
    ) -> None:
        super().__init__()
        shape = as_sample_shape("shape", shape)
        init = v.check_non_negative_number("init", init)
        self.theta_min = v.check_non_negative_number("theta_min", theta_min)
        if init < self.theta_min:
            raise ValueError(f"init must be >= theta_min ({self.theta_min}), got {init}")
        self.theta = nn.Parameter(torch.full(shape, init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.theta  # one Module.__getattr__: this runs on every forward
        check_sample_shape(x, theta.shape, "PerturbationInjection")
        if not self.enabled:
            return x
        # theta * z and |theta| * z have the same law (z is symmetric); |theta| keeps
        # inject_noise's sigma >= 0 between an optimizer step and clamp_(). One fused op.
        return inject_noise_abs(x, theta)

    @torch.no_grad()
    def clamp_(self) -> PerturbationInjection:
        """Project ``theta`` onto ``theta >= theta_min`` in place."""
        self.theta.clamp_(min=self.theta_min)
        return self

    def extra_repr(self) -> str:
        shape = tuple(self.theta.shape)
        return f"shape={shape}, theta_min={self.theta_min}{self._enabled_repr()}"
