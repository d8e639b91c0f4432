"""``make_loader``: a DataLoader with reproducible shuffling and a fast path for
:class:`ImageTensorDataset` (one gather per batch instead of one item at a time)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from fastnoise._validation import check_positive_int
from fastnoise.data.tensor_dataset import ImageTensorDataset


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    seed: int | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
    distributed: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches ``(X float32 (B, C, H, W), Y int64 (B,))`` of ``dataset``.

    ``seed`` fixes the shuffling order of every epoch (None: torch's global RNG).
    ``distributed`` shards the data over the ranks of the initialized process group with
    a DistributedSampler (seed None means 0: all ranks must agree); call
    ``sampler_of(loader).set_epoch(epoch)`` each epoch to reshuffle.
    """
    check_positive_int("batch_size", batch_size)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if len(dataset) == 0:
        raise ValueError("dataset must not be empty")
    generator = None if seed is None else torch.Generator().manual_seed(seed)

    if distributed:
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "distributed=True needs torch.distributed.init_process_group(...) first"
            )
        sampler: Sampler = DistributedSampler(
            dataset, shuffle=shuffle, seed=seed or 0, drop_last=drop_last
        )
    elif shuffle:
        sampler = RandomSampler(dataset, generator=generator)
    else:
        sampler = SequentialSampler(dataset)

    on_cpu = not isinstance(dataset, ImageTensorDataset) or dataset.device.type == "cpu"
    if not on_cpu and num_workers > 0:
        raise ValueError(
            f"num_workers must be 0 for a dataset on {dataset.device} (workers cannot share it)"
        )
    common = dict(
        num_workers=num_workers,
        pin_memory=pin_memory and on_cpu and torch.cuda.is_available(),  # no-op elsewhere
        persistent_workers=num_workers > 0,
        generator=generator,
    )
    if isinstance(dataset, ImageTensorDataset) and dataset.transform is None:
        # batch_size=None + a batch sampler: the loader hands dataset[list_of_indices]
        # (already a stacked batch) through without per-item collation.
        batches = BatchSampler(sampler, batch_size, drop_last)
        return DataLoader(dataset, batch_size=None, sampler=batches, **common)
    return DataLoader(dataset, batch_size, sampler=sampler, drop_last=drop_last, **common)


def sampler_of(loader: DataLoader) -> Sampler:
    """The per-index sampler of a loader from :func:`make_loader` (for ``set_epoch``)."""
    sampler = loader.sampler
    return sampler.sampler if isinstance(sampler, BatchSampler) else sampler
