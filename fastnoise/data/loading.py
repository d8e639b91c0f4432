"""``load_dataset``: one entry point for the torchvision data sets and the embedded ones."""

from __future__ import annotations

import os
from pathlib import Path

import torchvision
from torch.utils.data import Dataset
from torchvision import transforms

from fastnoise.data.catalog import DatasetInfo, dataset_info
from fastnoise.data.embedded_subsets import load_embedded
from fastnoise.data.tensor_dataset import Transform

ROOT_ENV = "FASTNOISE_DATA_ROOT"
DEFAULT_ROOT = Path("~/.cache/fastnoise/data")

# Marks datasets built here with the plain conversion, so as_tensors may read .data directly.
TO_TENSOR = transforms.ToTensor()


class DatasetNotFoundError(FileNotFoundError):
    """The files of a data set are not under ``root`` (or could not be downloaded)."""


def default_root() -> Path:
    """``$FASTNOISE_DATA_ROOT`` if set, else ``~/.cache/fastnoise/data``."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT).expanduser()


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    train: bool = True,
    download: bool = False,
    transform: Transform | None = None,
) -> Dataset:
    """Training (``train=True``) or test split of ``name``; items are
    ``(float32 CxHxW tensor in [0, 1], int label)``.

    ``name``: one of ``DATASETS`` ("mnist", "fashion-mnist", "cifar10", "cifar100",
    "embedded", "embedded-fashion"). The embedded ones ship with the package and ignore
    ``root``/``download``. ``root`` is the torchvision root (holding ``MNIST/raw``,
    ``cifar-10-batches-py``, ...); None means :func:`default_root`. ``transform``, if given,
    receives the float tensor image (so tensor transforms such as RandomCrop apply).
    """
    info = dataset_info(name)
    if not isinstance(train, bool):
        raise TypeError(f"train must be a bool, got {type(train).__name__}")
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
    if info.torchvision_class is None:
        return load_embedded(info.name, train=train, transform=transform)

    root_path = Path(root).expanduser() if root is not None else default_root()
    full_transform = TO_TENSOR if transform is None else transforms.Compose([TO_TENSOR, transform])
    if download:
        try:
            return info.torchvision_class(
                str(root_path), train=train, download=True, transform=full_transform
            )
        except (OSError, RuntimeError) as error:  # URLError is an OSError
            raise DatasetNotFoundError(
                _not_found_message(info, root_path, f"download failed ({error})")
            ) from error

    missing = missing_files(info, root_path)
    if missing:
        raise DatasetNotFoundError(
            _not_found_message(
                info,
                root_path,
                f"missing {', '.join(p.name for p in missing)} in {missing[0].parent}",
            )
        )
    try:
        return info.torchvision_class(str(root_path), train=train, transform=full_transform)
    except RuntimeError as error:  # torchvision's md5 check (CIFAR) rejected a file
        raise DatasetNotFoundError(
            _not_found_message(info, root_path, f"files are present but corrupted ({error})")
        ) from error


def missing_files(info: DatasetInfo, root: Path) -> list[Path]:
    """Files torchvision needs for ``info`` that are absent under ``root`` (both splits:
    torchvision checks all of them whichever split is asked for)."""
    cls, folder = info.torchvision_class, _folder(info, root)
    if issubclass(cls, torchvision.datasets.CIFAR10):
        names = [f for f, _md5 in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    else:
        names = [os.path.splitext(os.path.basename(url))[0] for url, _md5 in cls.resources]
        legacy = root / cls.__name__ / "processed"
        if (legacy / cls.training_file).is_file() and (legacy / cls.test_file).is_file():
            return []  # torchvision still reads its old processed .pt files
    return [folder / n for n in names if not (folder / n).is_file()]


def _folder(info: DatasetInfo, root: Path) -> Path:
    """Where torchvision looks for the files of ``info``."""
    cls = info.torchvision_class
    if issubclass(cls, torchvision.datasets.CIFAR10):  # CIFAR100 subclasses it
        return root / cls.base_folder
    return root / cls.__name__ / "raw"  # MNIST family: uncompressed idx files


def _not_found_message(info: DatasetInfo, root: Path, problem: str) -> str:
    return (
        f"dataset {info.name!r} not found under root {str(root)!r}: {problem}. "
        f"To fix: pass download=True (needs internet), or put the files at "
        f"{str(_folder(info, root))!r} (torchvision layout), or pass root= (or set "
        f"${ROOT_ENV}) pointing at a folder that has them. For offline use without any "
        f"files, name='embedded' (MNIST subset) or 'embedded-fashion' ship with fastnoise."
    )
