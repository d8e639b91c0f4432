"""SampleUnderNoise (Cohen et al. 2019, Algorithm 1): class counts of f(x + eps),
eps ~ N(0, sigma^2 I), batched across images and kept on the device.

The samples of all images form one flat stream (image j owns rows ``j*num .. j*num+num-1``)
cut into forward passes of at most ``batch_size`` rows, so several images share a pass
when their samples fit one. Each pass copies its images into one buffer and adds the
noise with ``fastnoise.inject_noise`` (fastnoise's Philox spec), at a Philox offset that
advances by the counters each pass consumes: one seed gives a reproducible run and no two
passes reuse a draw. Counts are summed on the device; nothing here waits for it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fastnoise import rng
from fastnoise.functional import inject_noise

__all__ = ["NoiseStream", "count_predictions"]


class NoiseStream:
    """One seed and a running Philox offset: successive draws never overlap."""

    def __init__(self, seed: int):
        self.seed = seed
        self.offset = 0

    def add_noise(self, rows: torch.Tensor, sigma: float) -> torch.Tensor:
        noisy = inject_noise(rows, sigma, self.seed, self.offset)
        self.offset += rng.counters_for(rows.numel())
        return noisy


def count_predictions(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    num: int,
    num_classes: int,
    sigma: float,
    batch_size: int,
    noise: NoiseStream,
) -> torch.Tensor:
    """``(B, num_classes)`` int64 counts, on ``images``' device, of the classes ``forward``
    predicts for ``num`` noisy copies of each of the ``B`` images."""
    batch = images.shape[0]
    counts = torch.zeros(batch * num_classes, dtype=torch.int64, device=images.device)
    total = batch * num
    for first in range(0, total, batch_size):
        last = min(first + batch_size, total)
        sample = torch.arange(first, last, device=images.device)
        image_of_row = sample // num
        noisy = noise.add_noise(images.index_select(0, image_of_row), sigma)
        predicted = forward(noisy).argmax(1)
        counts.index_add_(0, image_of_row * num_classes + predicted, torch.ones_like(predicted))
    return counts.view(batch, num_classes)
