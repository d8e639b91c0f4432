"""Pre-activation ResNet-18 (He et al., "Identity Mappings in Deep Residual Networks",
2016) for 32x32 inputs: 64/128/256/512 channels, two blocks per stage.

Down-sampling shortcuts are 1x1 stride-2 convolutions with batch norm, applied to the
pre-activated input, and a final BN-ReLU precedes pooling. With a biased classifier
this gives exactly Learn2Perturb Table 1's 11,173,962 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastnoise.models._parts import ImageClassifier, NoiseOptions, halved
from fastnoise.models.resnet_v1 import _init_weights

STAGE_WIDTHS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = (2, 2, 2, 2)


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv plus shortcut, then noise on the block output."""

    def __init__(self, in_planes: int, planes: int, stride: int, noise: nn.Module) -> None:
        super().__init__()
        self.bn_a = nn.BatchNorm2d(in_planes)
        self.conv_a = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn_b = nn.BatchNorm2d(planes)
        self.conv_b = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.noise = noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn_a(x))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv_a(pre)
        out = self.conv_b(F.relu(self.bn_b(out)))
        # Learn2Perturb A.1: noise on the block output; its ReLU is the next pre-activation.
        return self.noise(out + shortcut)


class PreActResNet(ImageClassifier):
    def __init__(
        self,
        widths: Sequence[int],
        blocks_per_stage: Sequence[int],
        num_classes: int,
        noise: NoiseOptions,
        pnil: bool,
        in_channels: int,
        input_size: int,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
    ) -> None:
        super().__init__(in_channels, input_size, num_classes, pnil, mean, std)
        size = input_size
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.noise1 = noise.layer((widths[0], size, size))  # after the first convolution
        stages, in_planes = [], widths[0]
        for index, (planes, count) in enumerate(zip(widths, blocks_per_stage, strict=True)):
            blocks = []
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                size = halved(size) if stride == 2 else size
                block_noise = noise.layer((planes, size, size))
                blocks.append(PreActBlock(in_planes, planes, stride, block_noise))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.bn_final = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)
        _init_weights(self)
        noise.finish(self)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.noise1(self.conv1(x)))
        x = F.relu(self.bn_final(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def resnet_v2_18(
    num_classes: int = 10,
    noise: str | None = None,
    pnil: bool = False,
    in_channels: int = 3,
    input_size: int = 32,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    noise_init: float = 0.25,
    theta_min: float = 0.01,
    pni_mode: str = "layer",
) -> PreActResNet:
    """Pre-activation ResNet-18 (ResNet-V2(18) of Learn2Perturb). Arguments as
    :func:`fastnoise.models.resnet_v1`."""
    options = NoiseOptions(noise, noise_init, theta_min, pni_mode)
    layout = (STAGE_WIDTHS, BLOCKS_PER_STAGE)
    return PreActResNet(*layout, num_classes, options, pnil, in_channels, input_size, mean, std)
