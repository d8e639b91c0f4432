"""Pieces every fastnoise model shares: the input stage, noise options, shape checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fastnoise import _validation as v
from fastnoise.data.catalog import DATASETS
from fastnoise.nn.factory import check_noise_kind, noise_layer
from fastnoise.nn.normalize import Normalize
from fastnoise.nn.pni import add_weight_noise
from fastnoise.nn.pnil import PNIL

# Default normalization: the training-set statistics the data catalog records.
CIFAR10_MEAN, CIFAR10_STD = DATASETS["cifar10"].mean, DATASETS["cifar10"].std
MNIST_MEAN, MNIST_STD = DATASETS["mnist"].mean, DATASETS["mnist"].std


@dataclass(frozen=True)
class NoiseOptions:
    """Which noise a model gets and how it starts."""

    kind: str | None = None  # None, "l2p", "pni" or "pni-w"
    init: float = 0.25  # theta for L2P, alpha for PNI (both papers start at 0.25)
    theta_min: float = 0.01
    pni_mode: str = "layer"

    def __post_init__(self) -> None:
        check_noise_kind(self.kind)

    def layer(self, shape: Sequence[int]) -> nn.Module:
        """The activation-noise layer for one output of one-sample ``shape``."""
        return noise_layer(
            self.kind, shape, init=self.init, theta_min=self.theta_min, pni_mode=self.pni_mode
        )

    def finish(self, model: nn.Module) -> None:
        """PNI-W: noise on the weights of every conv and linear layer, added last."""
        if self.kind == "pni-w":
            add_weight_noise(model, self.pni_mode, self.init)


def default_stats(
    in_channels: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[Sequence[float], Sequence[float]]:
    """``mean``/``std`` as given, else CIFAR-10's for 3 channels and MNIST's for 1."""
    if (mean is None) != (std is None):
        raise ValueError("mean and std must be given together")
    if mean is not None:
        return mean, std
    if in_channels == 3:
        return CIFAR10_MEAN, CIFAR10_STD
    if in_channels == 1:
        return MNIST_MEAN, MNIST_STD
    raise ValueError(f"pass mean and std for in_channels={in_channels} (no default)")


class ImageClassifier(nn.Module):
    """Base for the models: [0, 1] images of a fixed size -> (PNIL) -> Normalize -> body.

    Subclasses build their layers and implement :meth:`classify` (normalized images to
    logits); this base checks the input shape and applies PNIL and Normalize first.
    """

    def __init__(
        self,
        in_channels: int,
        input_size: int,
        num_classes: int,
        pnil: bool,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
    ) -> None:
        super().__init__()
        self.in_channels = v.check_positive_int("in_channels", in_channels)
        self.input_size = v.check_positive_int("input_size", input_size)
        self.num_classes = v.check_positive_int("num_classes", num_classes)
        if not isinstance(pnil, bool):
            raise TypeError(f"pnil must be a bool, got {type(pnil).__name__}")
        mean, std = default_stats(in_channels, mean, std)
        # PNIL sits before Normalize: it learns noise in [0, 1] pixel space (PNIL Sec. 3.2).
        self.pnil = PNIL((in_channels, input_size, input_size)) if pnil else nn.Identity()
        self.normalize = Normalize(mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v.check_tensor("x", x)
        expected = (self.in_channels, self.input_size, self.input_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"x must have shape (N, {', '.join(map(str, expected))}) for this model, "
                f"got {tuple(x.shape)}"
            )
        return self.classify(self.normalize(self.pnil(x)))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement classify()")


def halved(size: int) -> int:
    """Spatial size after a stride-2 3x3 conv with padding 1 (= ceil(size / 2))."""
    return (size + 1) // 2
