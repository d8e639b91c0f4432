"""The small CNN of the PNIL paper for MNIST and Fashion-MNIST (its Sec. 4.4): two
convolutions and one fully connected layer.

Layout (ours; the paper gives only the layer count): conv 5x5 (16) - ReLU - max-pool 2,
conv 5x5 (32) - ReLU - max-pool 2, linear. Noise goes after each convolution, before
its ReLU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastnoise.models._parts import ImageClassifier, NoiseOptions

CHANNELS = (16, 32)


class SmallCNN(ImageClassifier):
    def __init__(
        self,
        num_classes: int,
        noise: NoiseOptions,
        pnil: bool,
        in_channels: int,
        input_size: int,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
    ) -> None:
        super().__init__(in_channels, input_size, num_classes, pnil, mean, std)
        if input_size < 4:
            raise ValueError(f"input_size must be >= 4 (two 2x2 poolings), got {input_size}")
        c1, c2 = CHANNELS
        self.conv1 = nn.Conv2d(in_channels, c1, 5, padding=2)
        self.noise1 = noise.layer((c1, input_size, input_size))
        pooled = input_size // 2
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.noise2 = noise.layer((c2, pooled, pooled))
        pooled //= 2
        self.fc = nn.Linear(c2 * pooled * pooled, num_classes)
        noise.finish(self)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.noise1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.noise2(self.conv2(x))), 2)
        return self.fc(torch.flatten(x, 1))


def small_cnn(
    in_channels: int = 1,
    num_classes: int = 10,
    noise: str | None = None,
    pnil: bool = False,
    input_size: int = 28,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    noise_init: float = 0.25,
    theta_min: float = 0.01,
    pni_mode: str = "layer",
) -> SmallCNN:
    """Two convolutions and a linear layer for 28x28 grey images. ``mean``/``std``
    default to MNIST's; other arguments as :func:`fastnoise.models.resnet_v1`."""
    options = NoiseOptions(noise, noise_init, theta_min, pni_mode)
    return SmallCNN(num_classes, options, pnil, in_channels, input_size, mean, std)
