"""What models and training need to know about each data set, without loading it."""

from __future__ import annotations

from dataclasses import dataclass

import torchvision


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one data set.

    ``mean``/``std`` are per-channel statistics of the full official training split
    (pixels in [0, 1]); the embedded subsets reuse their parent's so a model trained on
    a subset normalizes exactly like one trained on the full set.
    ``torchvision_class`` is None for the subsets that ship inside the package.
    """

    name: str
    in_channels: int
    num_classes: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    torchvision_class: type | None
    train_size: int
    test_size: int


_MNIST_STATS = dict(mean=(0.1307,), std=(0.3081,))
_FASHION_STATS = dict(mean=(0.2860,), std=(0.3530,))

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist",
        1,
        10,
        28,
        **_MNIST_STATS,
        torchvision_class=torchvision.datasets.MNIST,
        train_size=60000,
        test_size=10000,
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        1,
        10,
        28,
        **_FASHION_STATS,
        torchvision_class=torchvision.datasets.FashionMNIST,
        train_size=60000,
        test_size=10000,
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        3,
        10,
        32,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        torchvision_class=torchvision.datasets.CIFAR10,
        train_size=50000,
        test_size=10000,
    ),
    "cifar100": DatasetInfo(
        "cifar100",
        3,
        100,
        32,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        torchvision_class=torchvision.datasets.CIFAR100,
        train_size=50000,
        test_size=10000,
    ),
    # Real images shipped in fastnoise/data/embedded/ (see its README.md): work offline.
    "embedded": DatasetInfo(
        "embedded",
        1,
        10,
        28,
        **_MNIST_STATS,
        torchvision_class=None,
        train_size=5000,
        test_size=1000,
    ),
    "embedded-fashion": DatasetInfo(
        "embedded-fashion",
        1,
        10,
        28,
        **_FASHION_STATS,
        torchvision_class=None,
        train_size=5000,
        test_size=1000,
    ),
}

_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "embedded_fashion": "embedded-fashion",
}


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` (case-insensitive; ``_`` may replace ``-``)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"name must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[key]
