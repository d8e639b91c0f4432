"""fastnoise.data: torchvision loading, embedded subsets, as_tensors, make_loader."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch.utils.data import Subset

from fastnoise.data import (
    DATASETS,
    DatasetNotFoundError,
    ImageTensorDataset,
    as_tensors,
    dataset_info,
    load_dataset,
    make_loader,
    sampler_of,
    to_tensor_dataset,
)

EMBEDDED = {"embedded": "mnist_subset.npz", "embedded-fashion": "fashion_mnist_subset.npz"}
# Recorded in fastnoise/data/embedded/README.md; a rebuilt or damaged file must change both.
EMBEDDED_SHA256 = {
    "mnist_subset.npz": "5eb64696456aee524ee18493f252100ead4f240f52fe1d430b3c07ba5389e6f8",
    "fashion_mnist_subset.npz": "4cbb16bab651bc512c42f9e32e8feac58d15e243c02a14ff7c1dc13998feebab",
}
FULL_SOURCE = {"embedded": "mnist", "embedded-fashion": "fashion-mnist"}


def _embedded_bytes(file_name: str) -> bytes:
    return (resources.files("fastnoise.data") / "embedded" / file_name).read_bytes()


# ---------------------------------------------------------------- embedded subsets


@pytest.mark.parametrize("name", sorted(EMBEDDED))
@pytest.mark.parametrize("train", [True, False])
def test_embedded_loads_offline_with_balanced_classes(name, train):
    info = DATASETS[name]
    ds = load_dataset(name, train=train)  # no root, no files, no network
    n = info.train_size if train else info.test_size
    assert len(ds) == n
    image, label = ds[0]
    assert image.shape == (info.in_channels, info.image_size, info.image_size)
    assert image.dtype == torch.float32 and isinstance(label, int)
    X, Y = as_tensors(ds)
    assert X.shape == (n, 1, 28, 28) and Y.dtype == torch.int64
    assert 0.0 <= X.min() and X.max() <= 1.0 and X.max() == 1.0  # uint8 / 255, not /256
    assert torch.equal(Y.bincount(minlength=10), torch.full((10,), n // 10))
    assert len(ds.classes) == info.num_classes


@pytest.mark.parametrize("file_name", sorted(EMBEDDED_SHA256))
def test_embedded_files_match_recorded_checksums(file_name):
    assert hashlib.sha256(_embedded_bytes(file_name)).hexdigest() == EMBEDDED_SHA256[file_name]


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_embedded_images_are_the_source_rows(name, data_root):
    """Provenance: each stored image and label equals its row in the official split."""
    with np.load(io.BytesIO(_embedded_bytes(EMBEDDED[name]))) as archive:
        for train, split in [(True, "train"), (False, "test")]:
            full = load_dataset(FULL_SOURCE[name], root=data_root, train=train)
            index = torch.from_numpy(archive[f"{split}_source_index"].astype(np.int64))
            assert len(index.unique()) == len(index)
            assert torch.equal(full.data[index], torch.from_numpy(archive[f"{split}_images"]))
            labels = torch.from_numpy(archive[f"{split}_labels"].astype(np.int64))
            assert torch.equal(full.targets[index], labels)


# ---------------------------------------------------------------- MNIST / Fashion-MNIST


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_mnist_family_loads_from_root(name, data_root):
    info = DATASETS[name]
    train, test = load_dataset(name, root=data_root), load_dataset(name, data_root, train=False)
    assert (len(train), len(test)) == (info.train_size, info.test_size)
    assert isinstance(train, info.torchvision_class)
    image, label = test[7]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and isinstance(label, int)
    # Fast path (reads .data) must equal iterating the items through ToTensor.
    X, Y = as_tensors(train, limit=40)
    assert torch.equal(X, torch.stack([train[i][0] for i in range(40)]))
    assert Y.tolist() == [train[i][1] for i in range(40)]
    assert 0.0 <= X.min() and X.max() <= 1.0
    # DATASETS statistics are those of the full training split.
    pixels = train.data.to(torch.float32) / 255
    assert info.mean[0] == pytest.approx(pixels.mean().item(), abs=2e-4)
    assert info.std[0] == pytest.approx(pixels.std().item(), abs=2e-4)


def test_name_is_case_and_separator_insensitive(data_root):
    assert isinstance(
        load_dataset("Fashion_MNIST", root=data_root), torchvision.datasets.FashionMNIST
    )
    assert dataset_info("CIFAR-10") is DATASETS["cifar10"]


# ---------------------------------------------------------------- CIFAR on generated files


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _fake_cifar(root: Path, cls: type, n_per_file: int) -> dict[str, np.ndarray]:
    """Pickled batches in the real layout (rows: 1024 R, 1024 G, 1024 B, row-major)."""
    rng = np.random.default_rng(0)
    fine = cls is torchvision.datasets.CIFAR100
    num_classes = 100 if fine else 10
    folder, written = root / cls.base_folder, {}
    for file_name, _md5 in cls.train_list + cls.test_list:
        data = rng.integers(0, 256, size=(n_per_file, 3072), dtype=np.uint8)
        labels = rng.integers(0, num_classes, size=n_per_file).tolist()
        batch = {"batch_label": file_name, "data": data, "filenames": ["x.png"] * n_per_file}
        batch |= (
            {"fine_labels": labels, "coarse_labels": [0] * n_per_file}
            if fine
            else {"labels": labels}
        )
        _pickle(folder / file_name, batch)
        written[file_name] = (data, labels)
    names = [f"class_{i}" for i in range(num_classes)]
    meta = {cls.meta["key"]: names} | ({"coarse_label_names": ["c"] * 20} if fine else {})
    _pickle(folder / cls.meta["filename"], meta)
    return written


def _trust_generated_md5(monkeypatch, root: Path, cls: type) -> None:
    """torchvision md5-checks every CIFAR file on load (not only on download). Generated
    files cannot have the real checksums, so point the class's checksum table at theirs:
    the integrity check itself still runs."""

    def md5(name: str) -> str:
        return hashlib.md5((root / cls.base_folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(cls, "train_list", [[f, md5(f)] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, md5(f)] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", cls.meta | {"md5": md5(cls.meta["filename"])})


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loads_generated_batches(name, tmp_path, monkeypatch):
    info = DATASETS[name]
    cls = info.torchvision_class
    written = _fake_cifar(tmp_path, cls, n_per_file=3)
    _trust_generated_md5(monkeypatch, tmp_path, cls)

    train = load_dataset(name, root=tmp_path)
    test = load_dataset(name, root=tmp_path, train=False)
    assert (len(train), len(test)) == (3 * len(cls.train_list), 3)
    assert train.classes[-1] == f"class_{info.num_classes - 1}"
    data, labels = written[cls.test_list[0][0]]
    image, label = test[2]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    expected = torch.from_numpy(data[2].reshape(3, 32, 32)).float() / 255  # CHW in the file
    assert torch.equal(image, expected) and label == labels[2]
    X, Y = as_tensors(train)  # fast path: HWC .data permuted back to CHW
    assert torch.equal(X, torch.stack([train[i][0] for i in range(len(train))]))
    assert Y.tolist() == [train[i][1] for i in range(len(train))]
    assert 0 <= Y.min() and Y.max() < info.num_classes


def test_cifar_with_wrong_checksums_names_the_corruption(tmp_path):
    _fake_cifar(tmp_path, torchvision.datasets.CIFAR10, n_per_file=1)
    with pytest.raises(DatasetNotFoundError, match="corrupted"):
        load_dataset("cifar10", root=tmp_path)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name, missing", [("cifar10", "data_batch_1"), ("cifar100", "meta"), ("mnist", "t10k")]
)
def test_missing_files_error_says_what_and_how_to_fix(name, missing, tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset(name, root=tmp_path)
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    for part in (repr(name), str(tmp_path), missing, "download=True", "embedded"):
        assert part in message


def test_default_root_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTNOISE_DATA_ROOT", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        load_dataset("fashion-mnist")


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="cifar10.*embedded.*mnist"):
        load_dataset("svhn")
    with pytest.raises(TypeError, match="train"):
        load_dataset("embedded", train="yes")
    with pytest.raises(TypeError, match="transform"):
        load_dataset("embedded", transform=3)
    with pytest.raises(ValueError, match="limit"):
        as_tensors(load_dataset("embedded", train=False), limit=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATASETS["mnist"].num_classes = 3


def test_image_tensor_dataset_validates_its_tensors():
    images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="images"):
        ImageTensorDataset(images[0], torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        ImageTensorDataset(images, torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="targets"):
        ImageTensorDataset(images, torch.zeros(4))
    with pytest.raises(TypeError, match="images"):
        ImageTensorDataset(images.to(torch.int32), torch.zeros(4, dtype=torch.long))


# ---------------------------------------------------------------- tensors and loaders


def test_transform_receives_the_float_image_and_disables_the_fast_path():
    plain = load_dataset("embedded", train=False)
    flipped = load_dataset("embedded", train=False, transform=lambda x: 1 - x)
    assert torch.equal(flipped[5][0], 1 - plain[5][0])
    assert torch.equal(as_tensors(flipped, limit=8)[0], 1 - as_tensors(plain, limit=8)[0])
    X, Y = make_loader(flipped, 8, shuffle=False).__iter__().__next__()
    assert torch.equal(X, 1 - as_tensors(plain, limit=8)[0]) and Y.dtype == torch.int64


def test_subset_and_tensor_dataset_fast_paths_match_items():
    ds = load_dataset("embedded-fashion", train=False)
    subset = Subset(ds, [9, 3, 500, 3])
    X, Y = as_tensors(subset)
    assert torch.equal(X, torch.stack([subset[i][0] for i in range(4)]))
    assert Y.tolist() == [subset[i][1] for i in range(4)]
    packed = to_tensor_dataset(subset)
    assert packed.data.dtype == torch.uint8 and torch.equal(as_tensors(packed)[0], X)
    assert torch.equal(ds[np.int64(9)][0], ds[9][0])  # numpy indices act like ints


def _epoch(loader) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(loader)
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


@pytest.mark.parametrize("wrap", [lambda ds: ds, lambda ds: Subset(ds, range(len(ds)))])
def test_make_loader_shuffles_reproducibly_and_covers_every_item(wrap):
    ds = load_dataset("embedded", train=False)
    X_all, Y_all = as_tensors(ds)
    data = wrap(ds)  # ImageTensorDataset (batched gather) and a generic Dataset
    loader = make_loader(data, 96, seed=3)
    X, Y = _epoch(loader)
    assert len(loader) == 11 and X.shape == X_all.shape and X.dtype == torch.float32
    order = torch.cdist(X.flatten(1), X_all.flatten(1)).argmin(1)  # recover the order
    assert sorted(order.tolist()) == list(range(len(ds)))
    assert torch.equal(X, X_all[order]) and torch.equal(Y, Y_all[order])
    assert order.tolist() != list(range(len(ds)))
    assert torch.equal(_epoch(make_loader(data, 96, seed=3))[1], Y)
    assert not torch.equal(_epoch(make_loader(data, 96, seed=4))[1], Y)
    assert not torch.equal(_epoch(loader)[1], Y)  # the next epoch reshuffles
    X_seq, _ = _epoch(make_loader(data, 96, shuffle=False, drop_last=True))
    assert torch.equal(X_seq, X_all[:960])


def test_make_loader_with_workers_and_pinned_memory(data_root):
    ds = Subset(load_dataset("mnist", root=data_root, train=False), range(64))
    X, Y = _epoch(make_loader(ds, 16, shuffle=False, num_workers=1, pin_memory=True))
    assert torch.equal(X, as_tensors(ds)[0]) and torch.equal(Y, as_tensors(ds)[1])


def test_make_loader_distributed_shards_with_a_process_group(tmp_path):
    ds = load_dataset("embedded", train=False)
    with pytest.raises(ValueError, match="init_process_group"):
        make_loader(ds, 10, distributed=True)
    store = torch.distributed.FileStore(str(tmp_path / "store"), 1)
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        loader = make_loader(ds, 100, seed=1, distributed=True)
        sampler = sampler_of(loader)
        assert isinstance(sampler, torch.utils.data.DistributedSampler)
        first = _epoch(loader)[1]
        sampler.set_epoch(1)
        assert torch.equal(first.sort().values, as_tensors(ds)[1].sort().values)
        assert not torch.equal(_epoch(loader)[1], first)
    finally:
        torch.distributed.destroy_process_group()


def test_make_loader_rejects_bad_arguments():
    ds = load_dataset("embedded", train=False)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, 0)
    with pytest.raises(ValueError, match="num_workers"):
        make_loader(ds, 8, num_workers=-1)
    with pytest.raises(TypeError, match="seed"):
        make_loader(ds, 8, seed=1.5)
