"""Real-image subsets that ship inside the package (``embedded/``), so demos and tests
run offline. Provenance, selection rule and licences: ``embedded/README.md``."""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch

from fastnoise.data.tensor_dataset import ImageTensorDataset, Transform

EMBEDDED_FILES = {
    "embedded": "mnist_subset.npz",
    "embedded-fashion": "fashion_mnist_subset.npz",
}


def load_embedded(
    name: str, train: bool = True, transform: Transform | None = None
) -> ImageTensorDataset:
    """The ``train`` or test split of embedded subset ``name`` as uint8 tensors."""
    split = "train" if train else "test"
    source = resources.files("fastnoise.data") / "embedded" / EMBEDDED_FILES[name]
    with source.open("rb") as f, np.load(f, allow_pickle=False) as archive:
        images = torch.from_numpy(archive[f"{split}_images"]).unsqueeze(1)  # (N, 1, H, W)
        targets = torch.from_numpy(archive[f"{split}_labels"].astype(np.int64))
        classes = [str(c) for c in archive["classes"]]
    return ImageTensorDataset(images, targets, classes=classes, transform=transform)
