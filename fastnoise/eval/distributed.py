"""Sharded evaluation under ``torchrun``: each rank attacks its own share of the samples.

:func:`fastnoise.eval.evaluate`, :func:`~fastnoise.eval.sweep_eps` and
:func:`~fastnoise.eval.autoattack` shard their data when ``torch.distributed`` is
initialized with more than one rank (``distributed=None``, the default; ``True`` insists on
it, ``False`` turns it off). Rank r of W takes the samples at positions r, r + W, r + 2W, ...
of the whole run (DistributedSampler's layout, without its padding), so every sample is
attacked by exactly one rank; the counts are then summed over the ranks and the per-sample
outcomes gathered in sample order, so every rank returns the same report.

- An ``(x, y)`` pair of tensors is sliced up front, each rank in batches of ``batch_size``.
- A ``DataLoader`` whose sampler is a ``DistributedSampler`` (with this run's rank and
  world size) is used as is: it already hands each rank its share. Its padding (the first
  samples repeated so that every rank gets as many) is dropped, so no sample counts twice;
  with the sampler's ``drop_last=True`` the samples it drops are not evaluated at all.
  Positions are the dataset's indices, so the outcomes come out in dataset order.
- Any other loader (a list of batches, a DataLoader with another sampler, an iterable) is
  read in full on every rank, which keeps every W-th sample and regroups them into batches
  of the loader's batch size. It must yield the same samples in the same order on every
  rank: a DataLoader shuffling with ``generator=None`` does not (each rank shuffles with
  its own noise stream), so it is refused; give it a DistributedSampler instead.

Every rank draws its own noise: ``seed`` (or, without one, a draw from the global RNG)
plus ``rank * 1000003`` seeds rank r's generators, as training does, so a sharded run is
reproducible with ``seed=`` and rank 0 draws as a single process would.

The ranks meet only between the attacks (to sum and gather), never inside them, so they
may hold unequal shares. Every rank must make the same call with the same arguments; an
error on one rank (a failing attack) leaves the others waiting at the next collective.
With NCCL, set each rank's GPU first (``torch.cuda.set_device``): the object collectives
that gather the outcomes use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, RandomSampler

from fastnoise.train.distributed import DistInfo

__all__ = ["Shard", "ShardedLoader", "resolve", "rank_seed", "SINGLE"]

RANK_SEED_STRIDE = 1_000_003  # rank r's generators start from seed + r * stride (as training)


@dataclass(frozen=True)
class Shard(DistInfo):
    """This process's rank among ``world_size`` evaluating ranks (training's DistInfo,
    plus the collectives evaluation needs)."""

    # -- collectives (every rank must call them, in the same order) ----------------------

    def all_reduce(self, tensor: torch.Tensor, op: Any = None) -> torch.Tensor:
        """Sum (or ``op``) of ``tensor`` over the ranks, as a new tensor on its device."""
        home = tensor.device
        work = tensor.detach().to(_collective_device(home), copy=True)
        dist.all_reduce(work, op=dist.ReduceOp.SUM if op is None else op)
        return work.to(home)

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (pickled; keep it small and on the CPU)."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


SINGLE = Shard()


def _collective_device(device: torch.device) -> torch.device:
    """NCCL reduces tensors on this rank's GPU (torch.cuda.set_device); gloo on the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu") if dist.get_backend() in ("gloo", "mpi") else device


def resolve(distributed: bool | None) -> Shard:
    """The shard this process evaluates: all of it unless torch.distributed runs W > 1."""
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed must be None, True or False, got {distributed!r}")
    if distributed is False:
        return SINGLE
    ready = dist.is_available() and dist.is_initialized()
    if not ready:
        if distributed:
            raise ValueError(
                "distributed=True needs an initialized torch.distributed process group (run "
                "under torchrun and call torch.distributed.init_process_group first)"
            )
        return SINGLE
    return Shard(dist.get_rank(), dist.get_world_size())


def rank_seed(seed: int, rank: int) -> int:
    return seed + RANK_SEED_STRIDE * rank


def refuse_ddp(model: Any, attacks: Iterable[Any] = ()) -> None:
    """A DistributedDataParallel wrapper may synchronize buffers on every forward; ranks
    run different numbers of forwards here, so that would hang."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    wrapped = isinstance(model, DDP) or any(
        isinstance(getattr(a, "model", None), DDP) for a in attacks
    )
    if wrapped:
        raise TypeError(
            "sharded evaluation needs the plain model (ddp.module), for evaluate and for the "
            "attacks: a DistributedDataParallel forward synchronizes the ranks, which run "
            "different numbers of forwards here"
        )


def batch_pair(batch: Any) -> tuple[Any, Any]:
    """``(x, y)`` of one batch (a tuple or list of at least two items)."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(
            "loader must be an (x, y) pair of tensors or yield (x, y) pairs, got "
            f"batches of type {type(batch).__name__}"
        )
    return batch[0], batch[1]


Triple = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class ShardedLoader:
    """This rank's share of a run, as ``(x, y, index)`` batches: ``index`` holds each
    sample's position in the whole run (its dataset index under a DistributedSampler)."""

    def __init__(
        self, batches: Callable[[], Iterator[Triple]], shard: Shard, num_samples: int | None
    ) -> None:
        self._batches, self.shard = batches, shard
        self.num_samples = num_samples  # this rank's samples, when known (progress bar)

    def __iter__(self) -> Iterator[Triple]:
        return self._batches()

    @classmethod
    def of_pair(
        cls, x: torch.Tensor, y: torch.Tensor, batch_size: int, shard: Shard
    ) -> ShardedLoader:
        """Samples r, r + W, ... of an ``(x, y)`` pair, in batches of ``batch_size``."""
        r, w = shard.rank, shard.world_size
        index = torch.arange(r, len(y), w)
        xs, ys = x[r::w].contiguous(), y[r::w].contiguous()
        return cls.of_local(xs, ys, index, batch_size, shard)

    @classmethod
    def of_local(
        cls, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, batch_size: int, shard: Shard
    ) -> ShardedLoader:
        """Samples this rank already holds, with their positions in the whole run."""

        def batches() -> Iterator[Triple]:
            if len(index):  # a rank may hold nothing (fewer samples than ranks)
                splits = (t.split(batch_size) for t in (x, y, index))
                yield from zip(*splits, strict=True)

        return cls(batches, shard, len(index))

    @classmethod
    def of_loader(cls, loader: Iterable[Any], shard: Shard, total: int | None) -> ShardedLoader:
        """A loader's share: a DistributedSampler's as it deals it, else every W-th sample.
        ``total``: the loader's sample count when known."""
        sampler = _distributed_sampler(loader)
        if sampler is not None:
            return cls._of_distributed_sampler(loader, sampler, shard)
        random = getattr(loader, "sampler", None)
        if isinstance(random, RandomSampler) and random.generator is None:
            raise ValueError(
                "a shuffling DataLoader (generator=None) yields a different order on every "
                "rank, so sharding it would count some samples twice and miss others; give it "
                "a DistributedSampler, or shuffle=False"
            )
        r, w = shard.rank, shard.world_size
        local = len(range(r, total, w)) if total is not None else None
        return cls(lambda: _every_wth(loader, r, w), shard, local)

    @classmethod
    def _of_distributed_sampler(
        cls, loader: Iterable[Any], sampler: DistributedSampler, shard: Shard
    ) -> ShardedLoader:
        r, w = shard.rank, shard.world_size
        if (sampler.rank, sampler.num_replicas) != (r, w):
            raise ValueError(
                f"the loader's DistributedSampler deals rank {sampler.rank} of "
                f"{sampler.num_replicas}, but this process is rank {r} of {w}"
            )
        # Global position p = r + j * W of local sample j; p >= len(dataset) is padding
        # (the sampler repeats its first samples there), always at the end of the shard.
        kept = sampler.num_samples
        if not sampler.drop_last:
            kept = min(kept, len(range(r, len(sampler.dataset), w)))

        def batches() -> Iterator[Triple]:
            order = torch.as_tensor(list(iter(sampler)), dtype=torch.long)
            done = 0
            for batch in loader:
                x, y = batch_pair(batch)
                take = max(0, min(len(y), kept - done))
                if take:
                    yield x[:take], y[:take], order[done : done + take]
                done += len(y)

        return cls(batches, shard, kept)


def _distributed_sampler(loader: Any) -> DistributedSampler | None:
    for sampler in (
        getattr(loader, "sampler", None),
        getattr(getattr(loader, "batch_sampler", None), "sampler", None),
    ):
        if isinstance(sampler, DistributedSampler):
            return sampler
    return None


def _every_wth(loader: Iterable[Any], rank: int, world: int) -> Iterator[Triple]:
    """Samples rank, rank + world, ... of the loader, regrouped into batches of the size of
    its first batch (so each rank's batches are as large as a single process's)."""
    start, size, held = 0, 0, 0
    parts: list[Triple] = []
    for batch in loader:
        x, y = batch_pair(batch)
        n = len(y)
        size = size or n
        first = (rank - start) % world
        if first < n:
            index = torch.arange(start + first, start + n, world)
            parts.append((x[first::world], y[first::world], index))
            held += len(index)
        start += n
        while size and held >= size:
            xs, ys, index = (torch.cat(p) for p in zip(*parts, strict=True))
            yield xs[:size], ys[:size], index[:size]
            held -= size
            parts = [(xs[size:], ys[size:], index[size:])] if held else []
    if held:
        yield tuple(torch.cat(p) for p in zip(*parts, strict=True))  # type: ignore[misc]
