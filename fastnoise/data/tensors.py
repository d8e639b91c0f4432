"""``as_tensors``: a whole data set as ``(X, Y)`` tensors, reading the underlying arrays
directly where that gives the same values as iterating the items (much faster)."""

from __future__ import annotations

import torch
import torchvision
from torch.utils.data import Dataset, Subset

from fastnoise._validation import check_positive_int
from fastnoise.data.loading import TO_TENSOR
from fastnoise.data.tensor_dataset import ImageTensorDataset, to_unit_float


def as_tensors(dataset: Dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` items (all if None) stacked: ``X`` float32 ``(N, C, H, W)``,
    ``Y`` int64 ``(N,)``, on the data set's device."""
    if limit is not None:
        check_positive_int("limit", limit)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    raw = _raw_arrays(dataset)
    if raw is not None:
        images, targets = raw
        return to_unit_float(images[:n]), targets[:n]
    if n == 0:
        raise ValueError("dataset must not be empty")
    items = [dataset[i] for i in range(n)]
    if not isinstance(items[0][0], torch.Tensor):
        raise TypeError(
            "dataset must yield (tensor, label) items, got a "
            f"{type(items[0][0]).__name__} image (add a ToTensor transform)"
        )
    X = torch.stack([image for image, _ in items]).to(torch.float32)
    Y = torch.tensor([int(label) for _, label in items], dtype=torch.int64)
    return X, Y


def to_tensor_dataset(dataset: Dataset, limit: int | None = None) -> ImageTensorDataset:
    """``dataset`` as an :class:`ImageTensorDataset` (kept uint8 when it can be read raw)."""
    if limit is not None:
        check_positive_int("limit", limit)
    raw = _raw_arrays(dataset)
    if raw is None:
        return ImageTensorDataset(*as_tensors(dataset, limit))
    images, targets = raw
    n = len(dataset) if limit is None else min(limit, len(dataset))
    return ImageTensorDataset(images[:n], targets[:n], classes=getattr(dataset, "classes", None))


def _raw_arrays(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
    """uint8 ``(N, C, H, W)`` images and int64 labels equal to the items, or None when
    only iterating is faithful (custom transforms, unknown data sets)."""
    if isinstance(dataset, Subset):
        raw = _raw_arrays(dataset.dataset)
        if raw is None:
            return None
        index = torch.as_tensor(dataset.indices, dtype=torch.long, device=raw[0].device)
        return raw[0][index], raw[1][index]
    if isinstance(dataset, ImageTensorDataset):
        return (dataset.data, dataset.targets) if dataset.transform is None else None
    plain = dataset.transform is TO_TENSOR if hasattr(dataset, "transform") else False
    if not plain or getattr(dataset, "target_transform", None) is not None:
        return None
    if isinstance(dataset, torchvision.datasets.MNIST):  # also FashionMNIST
        images = dataset.data.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    elif isinstance(dataset, torchvision.datasets.CIFAR10):  # also CIFAR100
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # stored HWC
    else:
        return None
    return images, torch.as_tensor(dataset.targets, dtype=torch.int64)
