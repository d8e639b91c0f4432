"""ResNet-11, the residual model of the PNIL paper for CIFAR-10 (its Sec. 4.4).

The paper gives no details, so this is our choice, documented: 11 weighted layers =
a two-convolution stem (3x3, 64 channels), one post-activation basic block in each of
four stages (64/128/256/512 channels, strides 1/2/2/2) and a linear classifier.
Down-sampling shortcuts are 1x1 convolutions with batch norm (not counted as layers,
as in He et al.). ``width`` scales every channel count (0.5 gives a CPU-sized model).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastnoise import _validation as v
from fastnoise.models._parts import ImageClassifier, NoiseOptions, halved
from fastnoise.models.resnet_v1 import BasicBlockV1, _init_weights, conv_shortcut

STAGE_WIDTHS = (64, 128, 256, 512)


class ResNet11(ImageClassifier):
    def __init__(
        self,
        width: float,
        num_classes: int,
        noise: NoiseOptions,
        pnil: bool,
        in_channels: int,
        input_size: int,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
    ) -> None:
        super().__init__(in_channels, input_size, num_classes, pnil, mean, std)
        widths = [round(base * width) for base in STAGE_WIDTHS]
        size = input_size
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.noise1 = noise.layer((widths[0], size, size))  # after the first convolution
        self.conv2 = nn.Conv2d(widths[0], widths[0], 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[0])
        blocks, in_planes = [], widths[0]
        for index, planes in enumerate(widths):
            stride = 1 if index == 0 else 2
            size = halved(size) if stride == 2 else size
            noise_layer = noise.layer((planes, size, size))
            blocks.append(BasicBlockV1(in_planes, planes, stride, noise_layer, conv_shortcut))
            in_planes = planes
        self.stages = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_planes, num_classes)
        _init_weights(self)
        noise.finish(self)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.noise1(self.bn1(self.conv1(x))))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.stages(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def resnet11(
    num_classes: int = 10,
    noise: str | None = None,
    pnil: bool = False,
    in_channels: int = 3,
    input_size: int = 32,
    *,
    width: float = 1.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    noise_init: float = 0.25,
    theta_min: float = 0.01,
    pni_mode: str = "layer",
) -> ResNet11:
    """ResNet-11 of the PNIL paper (see the module doc for the layout we chose).
    Arguments as :func:`fastnoise.models.resnet_v1`."""
    width = v.check_non_negative_number("width", width)
    if round(64 * width) < 1:
        raise ValueError(f"width must give at least one channel (width >= 1/128), got {width}")
    options = NoiseOptions(noise, noise_init, theta_min, pni_mode)
    return ResNet11(width, num_classes, options, pnil, in_channels, input_size, mean, std)
