"""Build the offline image subsets shipped in ``fastnoise/data/embedded/``.

Run once from the repository root (the outputs are committed)::

    python -m fastnoise.data._build_embedded --root /work/shared/data

Selection rule: for every class, ``per_class`` indices drawn without replacement by
``numpy.random.default_rng(SEED)`` from that class's indices in the official split,
then all chosen indices sorted ascending (file order). The source indices are stored
beside the images, so anyone holding the full data set can check the subset.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import torchvision

SEED = 0
TRAIN_PER_CLASS = 500
TEST_PER_CLASS = 100
EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"

# output file -> torchvision class reading the official raw files
SOURCES = {
    "mnist_subset.npz": torchvision.datasets.MNIST,
    "fashion_mnist_subset.npz": torchvision.datasets.FashionMNIST,
}


def stratified_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` random indices of every class, sorted ascending."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        pool = np.flatnonzero(labels == c)
        if len(pool) < per_class:
            raise ValueError(f"class {c} has only {len(pool)} images, need {per_class}")
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def _split(tv_class: type, root: str, train: bool, per_class: int) -> dict[str, np.ndarray]:
    ds = tv_class(root, train=train, download=False)
    images, labels = ds.data.numpy(), ds.targets.numpy()
    index = stratified_indices(labels, per_class, SEED)
    prefix = "train" if train else "test"
    return {
        f"{prefix}_images": images[index].astype(np.uint8),
        f"{prefix}_labels": labels[index].astype(np.uint8),
        f"{prefix}_source_index": index.astype(np.int32),
    }


def build(root: str, out_dir: Path = EMBEDDED_DIR) -> dict[str, str]:
    """Write every subset into ``out_dir``; return file name -> sha256."""
    digests = {}
    for file_name, tv_class in SOURCES.items():
        arrays = _split(tv_class, root, True, TRAIN_PER_CLASS)
        arrays |= _split(tv_class, root, False, TEST_PER_CLASS)
        classes = np.array(tv_class.classes)
        path = out_dir / file_name
        np.savez_compressed(path, classes=classes, **arrays)
        digests[file_name] = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{path}: {path.stat().st_size / 1e6:.2f} MB sha256 {digests[file_name]}")
    return digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="torchvision root holding MNIST/raw etc.")
    build(parser.parse_args().root)


if __name__ == "__main__":
    main()
