"""ResNet-V1 for CIFAR (He et al. 2016, Sec. 4.2): 6n+2 layers, 16/32/64 channels.

Shortcuts are option A (parameter-free): stride-2 subsampling (PNI's and Learn2Perturb's
AvgPool2d(1, stride=2)) and zero channel padding. With a biased classifier this gives
exactly Learn2Perturb Table 1's counts: 269,722 (depth 20) and 853,018 (depth 56).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastnoise import _validation as v
from fastnoise.models._parts import ImageClassifier, NoiseOptions, halved

DEPTHS = (20, 32, 44, 56, 110)


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride``, pad the new channels with zeros."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = planes - in_planes
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


def conv_shortcut(in_planes: int, planes: int, stride: int) -> nn.Module:
    """Option-B shortcut: 1x1 convolution with batch norm."""
    conv = nn.Conv2d(in_planes, planes, 1, stride, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(planes))


class BasicBlockV1(nn.Module):
    """conv-BN-ReLU-conv-BN, plus shortcut, then noise and ReLU.

    ``shortcut`` builds the shortcut when the shape changes (default option A).
    """

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int,
        noise: nn.Module,
        shortcut: Callable[[int, int, int], nn.Module] = ZeroPadShortcut,
    ) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(planes)
        self.conv_b = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn_b = nn.BatchNorm2d(planes)
        needs_projection = stride != 1 or in_planes != planes
        self.shortcut = shortcut(in_planes, planes, stride) if needs_projection else None
        self.noise = noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn_a(self.conv_a(x)))
        out = self.bn_b(self.conv_b(out))
        out = out + (x if self.shortcut is None else self.shortcut(x))
        # Learn2Perturb A.1: noise on every block output, before the ReLU.
        return F.relu(self.noise(out))


class ResNetV1(ImageClassifier):
    def __init__(
        self,
        depth: int,
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
        blocks_per_stage = (depth - 2) // 6
        widths = [round(base * width) for base in (16, 32, 64)]
        size = input_size
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.noise1 = noise.layer((widths[0], size, size))  # after the first convolution
        stages, in_planes = [], widths[0]
        for index, planes in enumerate(widths):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                size = halved(size) if stride == 2 else size
                block_noise = noise.layer((planes, size, size))
                blocks.append(BasicBlockV1(in_planes, planes, stride, block_noise))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_planes, num_classes)
        _init_weights(self)
        noise.finish(self)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.noise1(self.bn1(self.conv1(x))))
        x = self.stages(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def _init_weights(model: nn.Module) -> None:
    """He-normal convolutions (fan_out, as in He et al.), unit/zero batch norm."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def resnet_v1(
    depth: int = 20,
    width: float = 1.0,
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
) -> ResNetV1:
    """CIFAR ResNet-V1 of ``depth`` = 6n+2 layers, channels (16, 32, 64) x ``width``.

    ``noise``: None, ``"l2p"`` (Learn2Perturb), ``"pni"`` (PNI on activations) or
    ``"pni-w"`` (PNI on weights); activation noise goes after the first convolution and
    on every block output before its ReLU. ``pnil=True`` adds PNIL as the first layer.
    Inputs are [0, 1] pixels; ``mean``/``std`` (default CIFAR-10's) normalize inside.
    """
    v.check_positive_int("depth", depth)
    if (depth - 2) % 6 != 0:
        raise ValueError(f"depth must be 6n+2 (e.g. {DEPTHS}), got {depth}")
    width = v.check_non_negative_number("width", width)
    if round(16 * width) < 1:
        raise ValueError(f"width must give at least one channel (width >= 1/32), got {width}")
    options = NoiseOptions(noise, noise_init, theta_min, pni_mode)
    return ResNetV1(depth, width, num_classes, options, pnil, in_channels, input_size, mean, std)
