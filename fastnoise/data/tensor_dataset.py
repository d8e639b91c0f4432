"""A data set held as two tensors (airbench style): batches are one indexing op, and
the whole set can live on the GPU, so small data sets never wait on a loader."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from fastnoise._validation import check_tensor

Transform = Callable[[torch.Tensor], torch.Tensor]


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1], the same op as torchvision's ToTensor."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div(255)
    return images.to(torch.float32)


class ImageTensorDataset(Dataset):
    """Images ``(N, C, H, W)`` (uint8, or floating in [0, 1]) with integer labels ``(N,)``.

    ``ds[i]`` gives ``(float32 CxHxW in [0, 1], int)`` like the torchvision sets.
    ``ds[indices]`` (a list, slice or index tensor) gives a whole batch
    ``(float32 (B, C, H, W), int64 (B,))`` in one gather; :func:`make_loader` uses it.
    ``transform``, if given, receives one float32 CxHxW image.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        classes: Sequence[str] | None = None,
        transform: Transform | None = None,
    ) -> None:
        check_tensor("images", images, floating=False)
        check_tensor("targets", targets, floating=False)
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise TypeError(f"images must be uint8 or floating, got {images.dtype}")
        if targets.dim() != 1 or targets.shape[0] != images.shape[0]:
            raise ValueError(
                f"targets must be 1-D with one label per image ({images.shape[0]}), "
                f"got shape {tuple(targets.shape)}"
            )
        if targets.is_floating_point() or targets.dtype == torch.bool:
            raise TypeError(f"targets must be an integer tensor, got {targets.dtype}")
        if targets.device != images.device:
            raise ValueError(f"targets are on {targets.device} but images on {images.device}")
        self.data = images
        self.targets = targets.long()
        self.classes = list(classes) if classes is not None else None
        self.transform = transform

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index):
        if isinstance(index, numbers.Integral):
            return self._item(int(index))
        if self.transform is not None:
            # The transform is defined on single images, so batches go item by item.
            rows = range(len(self))[index] if isinstance(index, slice) else index
            items = [self._item(int(i)) for i in rows]
            return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long, device=self.data.device)
        return to_unit_float(self.data[index]), self.targets[index]

    def _item(self, index: int) -> tuple[torch.Tensor, int]:
        image = to_unit_float(self.data[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])

    def to(self, device: torch.device | str) -> ImageTensorDataset:
        """The same data set with both tensors on ``device`` (uint8 stays uint8: 4x smaller)."""
        return ImageTensorDataset(
            self.data.to(device), self.targets.to(device), self.classes, self.transform
        )

    @property
    def device(self) -> torch.device:
        return self.data.device

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(images={tuple(self.data.shape)} {self.data.dtype}, "
            f"classes={len(self.classes) if self.classes else 'unnamed'}, device={self.device})"
        )
