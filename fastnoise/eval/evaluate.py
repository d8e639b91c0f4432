"""Robust accuracy of a (randomized) model under a suite of attacks.

The defenses are random, so one number is not a result: every repeat redraws the noise
and reruns every attack, and the report gives mean ± std over repeats. Besides the
per-attack accuracy, a sample counts towards the per-sample worst case only if it is
classified correctly clean and under every attack in the same repeat (AutoAttack's rule);
unbounded attacks (eps = inf) join that worst case only when no bounded attack is present.

Under ``torchrun`` the samples are sharded over the ranks (:mod:`fastnoise.eval.distributed`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from fastnoise import _validation as v
from fastnoise.eval import distributed as D
from fastnoise.eval.checks import model_checks, result_checks
from fastnoise.eval.report import AttackResult, RobustnessReport, SweepResult

__all__ = ["AttackLike", "attack_settings", "evaluate", "sweep_eps"]

KINDS = ("single-step", "iterative", "gradient-free", "transfer")


class AttackLike(Protocol):
    """What :func:`evaluate` needs from an attack (see :mod:`fastnoise.attacks`)."""

    name: str
    eps: float
    norm: str
    kind: str

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


def _check_attacks(
    attacks: Sequence[AttackLike] | Mapping[str, AttackLike], distinct: bool = True
) -> list[AttackLike]:
    items = list(attacks.values()) if isinstance(attacks, Mapping) else list(attacks)
    for i, attack in enumerate(items):
        missing = [a for a in ("name", "eps", "norm", "kind") if not hasattr(attack, a)]
        if not callable(attack) or missing:
            raise TypeError(
                f"attacks[{i}] must be callable as attack(x, y) with attributes name, eps, norm, "
                f"kind; {type(attack).__name__} lacks {missing or ['__call__']}"
            )
        if attack.kind not in KINDS:
            raise ValueError(f"attacks[{i}].kind must be one of {KINDS}, got {attack.kind!r}")
    names = [a.name for a in items]
    if distinct and len(set(names)) != len(names):
        raise ValueError(f"attacks must have distinct names, got {names}")
    return items


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _resolve_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    home = _model_device(model)
    if device is None:
        return home
    device = torch.device(device)
    if device.type != home.type or (device.index is not None and device != home):
        raise ValueError(f"device is {device} but the model lives on {home}; move it first")
    return home


@contextlib.contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration; both restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device, shard: D.Shard = D.SINGLE) -> Iterator[None]:
    """Seed torch's generators for reproducible noise, without leaking the seed outside.
    A sharded run seeds each rank apart (``seed`` + rank * stride; without a seed, a draw
    from the global RNG in place of ``seed``), so the ranks draw different noise."""
    devices = [device] if device.type == "cuda" else []
    if shard.enabled:
        base = int(torch.randint(0, 2**62, ())) if seed is None else seed
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(D.rank_seed(base, shard.rank))
            yield
        return
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def _as_loader(data: Iterable[Any], batch_size: int, shard: D.Shard = D.SINGLE) -> Iterable[Any]:
    """An ``(x, y)`` pair of tensors becomes a list of batches; a loader passes through.
    Sharded, either becomes this rank's :class:`~fastnoise.eval.distributed.ShardedLoader`.

    A loader yields pairs, so a pair whose items are tensors cannot be mistaken for one.
    """
    if isinstance(data, D.ShardedLoader):  # already this rank's share (a random subset)
        return data
    is_pair = isinstance(data, (tuple, list)) and len(data) == 2
    if not (is_pair and all(isinstance(t, torch.Tensor) for t in data)):
        if shard.enabled:
            return D.ShardedLoader.of_loader(data, shard, _n_samples(data))
        return data
    x, y = data
    v.check_positive_int("batch_size", batch_size)
    if x.dim() == 0 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"an (x, y) pair needs x (N, ...) and labels y (N,), got shapes "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    if shard.enabled:
        return D.ShardedLoader.of_pair(x, y, batch_size, shard)
    return list(zip(x.split(batch_size), y.split(batch_size), strict=True))


def _batches(loader: Iterable[Any], device: torch.device) -> Iterator[tuple[torch.Tensor, ...]]:
    for batch in loader:
        x, y = D.batch_pair(batch)
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _indexed_batches(
    loader: Iterable[Any], device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """``(x, y, index)`` on the device; index (positions in the whole run) only sharded."""
    if not isinstance(loader, D.ShardedLoader):
        for x, y in _batches(loader, device):
            yield x, y, None
        return
    for x, y, index in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True), index


def _local_samples(
    loader: D.ShardedLoader, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """All of this rank's samples and their positions; None when it has none."""
    parts = [(x, y, index) for x, y, index in _indexed_batches(loader, device) if len(y)]
    if not parts:
        return None
    x, y, index = (torch.cat(p) for p in zip(*parts, strict=True))
    return x, y, index


class _Tally:
    """Per-repeat counts of correct predictions, kept on the device (no sync per batch),
    and the per-sample outcomes of draw 0 for the paired self-checks."""

    def __init__(self, n_attacks: int, device: torch.device) -> None:
        self.n = 0
        zero = lambda *shape: torch.zeros(shape, dtype=torch.long, device=device)  # noqa: E731
        self.clean, self.attacks, self.worst = zero(), zero(n_attacks), zero()
        # Over k draws: majority-vote correct, and correct in every draw (k tries).
        self.clean_majority, self.clean_all = zero(), zero()
        self.attacks_majority, self.attacks_all = zero(n_attacks), zero(n_attacks)
        self.worst_all = zero()
        self.outcomes: list[list[torch.Tensor]] = [[] for _ in range(n_attacks + 1)]
        self.index: list[torch.Tensor] = []  # sharded: the samples' positions in the run


_COUNTS = ("clean", "clean_majority", "clean_all", "worst", "worst_all")
_PER_ATTACK = ("attacks", "attacks_majority", "attacks_all")


def _cat(parts: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    return torch.cat([p.cpu() for p in parts]) if parts else torch.zeros(0, dtype=dtype)


def _reduce_tallies(
    tallies: list[_Tally],
    shard: D.Shard,
    counter: _ForwardCounter | None = None,
    outcomes: bool = True,
) -> None:
    """Sharded runs, in place: every repeat's counts (and the attacks' forward passes, rows
    and seconds) summed over the ranks, and the per-sample outcomes gathered in sample
    order, so every rank holds the whole run's tallies. Then the run's sample-count checks,
    which a single process makes as it goes."""
    n_attacks = len(tallies[0].attacks)
    rows = [
        torch.cat([
            torch.stack([getattr(t, f) for f in _COUNTS]),
            *(getattr(t, f) for f in _PER_ATTACK),
            t.clean.new_tensor([t.n]),
        ]).double()
        for t in tallies
    ]  # fmt: skip
    if counter is not None:
        stats = [*counter.passes, *counter.rows, *counter.seconds]
        rows.append(torch.tensor(stats, dtype=torch.float64, device=tallies[0].clean.device))
    flat = shard.all_reduce(torch.cat(rows)).cpu()  # counts < 2**53: exact in float64
    width = len(_COUNTS) + len(_PER_ATTACK) * n_attacks + 1
    for k, t in enumerate(tallies):
        row = flat[k * width : (k + 1) * width].long()
        for i, name in enumerate(_COUNTS):
            setattr(t, name, row[i])
        for i, name in enumerate(_PER_ATTACK):
            start = len(_COUNTS) + i * n_attacks
            setattr(t, name, row[start : start + n_attacks])
        t.n = int(row[-1])
    if counter is not None:
        stats = flat[len(tallies) * width :].tolist()
        counter.passes = [int(s) for s in stats[:n_attacks]]
        counter.rows = [int(s) for s in stats[n_attacks : 2 * n_attacks]]
        counter.seconds = stats[2 * n_attacks :]  # device-seconds over all ranks
    if tallies[0].n == 0:
        raise ValueError("loader yielded no samples")
    if any(t.n != tallies[0].n for t in tallies):
        raise ValueError(
            f"loader must yield the same samples every repeat ({[t.n for t in tallies]}); "
            "do not use drop_last with a random sampler"
        )
    if not outcomes:
        return
    mine = [
        (_cat(t.index, torch.long), torch.stack([_cat(o, torch.bool) for o in t.outcomes]))
        for t in tallies
    ]
    everyone = shard.all_gather(mine)
    for k, t in enumerate(tallies):
        index = torch.cat([rank[k][0] for rank in everyone])
        hits = torch.cat([rank[k][1] for rank in everyone], dim=1)
        order = index.argsort()
        if len(index) != t.n or bool((index[order].diff() == 0).any()):
            raise RuntimeError(f"sharding counted a sample twice (positions {index.tolist()})")
        t.index = [index[order]]
        t.outcomes = [[row] for row in hits[:, order]]


class _Judge:
    """Every prediction for one batch made on the same noise: draw j of the clean forward
    and of each attack's final forward runs with torch's generators set to the batch's
    seed + j, so a sample's outcomes differ only by the input, not by the draw (fastnoise's
    layers, and torch's own random ops, draw from those generators). The global RNG
    stream is restored afterwards: the attacks themselves draw as usual."""

    def __init__(self, model: nn.Module, device: torch.device, draws: int) -> None:
        self.model, self.draws = model, draws
        self.devices = [device] if device.type == "cuda" else []
        self.seed = 0

    def new_batch(self) -> None:
        self.seed = int(torch.randint(0, 2**62, ()))

    @torch.no_grad()
    def predictions(self, x: torch.Tensor) -> torch.Tensor:
        """``(draws, B)`` predicted classes, draw j on the batch's seed + j."""
        out = []
        for draw in range(self.draws):
            with torch.random.fork_rng(devices=self.devices):
                torch.manual_seed(self.seed + draw)
                out.append(self.model(x).argmax(1))
        return torch.stack(out)


def _votes(predictions: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(correct in draw 0, majority vote correct, correct in every draw) per sample."""
    hits = predictions == y
    majority = predictions.mode(dim=0).values == y
    return hits[0], majority, hits.all(dim=0)


class _ForwardCounter:
    """Forward passes and rows the model ran while an attack was running."""

    def __init__(self, model: nn.Module, n_attacks: int) -> None:
        self.passes, self.rows = [0] * n_attacks, [0] * n_attacks
        self.seconds = [0.0] * n_attacks
        self.current: int | None = None
        self.handle = model.register_forward_pre_hook(self._count)

    def _count(self, module: nn.Module, args: tuple) -> None:
        if self.current is not None and args and isinstance(args[0], torch.Tensor):
            self.passes[self.current] += 1
            self.rows[self.current] += args[0].shape[0]

    @contextlib.contextmanager
    def attack(self, index: int, device: torch.device) -> Iterator[None]:
        self.current = index
        started = time.perf_counter()
        try:
            yield
        finally:
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the attack's own time, not its queue
            self.seconds[index] += time.perf_counter() - started
            self.current = None


class _Resume:
    """An :func:`evaluate` run's state file (:mod:`fastnoise.eval.state`): what an
    interrupted run did (``done`` = (repeat, batches done in it), its tallies and forward
    counts, its RNG state) and the writer of the state after every batch; also the writer
    of the adversarial examples (``save_adv``)."""

    def __init__(
        self,
        path: str | None,
        fingerprint: dict[str, Any],
        device: torch.device,
        n_attacks: int,
        counter: _ForwardCounter,
        adv_folder: str | None,
        names: list[str],
    ) -> None:
        from fastnoise.eval import state as S

        self.path, self.fingerprint, self.device = path, fingerprint, device
        saved = S.load_state(path, fingerprint, "evaluate") if path is not None else None
        self.resumed = saved is not None
        self.done: tuple[int, int] = (0, 0)
        self.tallies: list[_Tally] = []
        self.rng: list[torch.Tensor] | None = None
        if saved is not None:
            self.done = (int(saved["repeat"]), int(saved["batch"]))
            self.tallies = [_tally_from(t, n_attacks, device) for t in saved["tallies"]]
            self.rng = saved["rng"]
            counter.passes = [int(p) for p in saved["passes"]]
            counter.rows = [int(r) for r in saved["rows"]]
            counter.seconds = [float(t) for t in saved["seconds"]]
        self.adv = S.AdvParts(adv_folder, names, self.resumed) if adv_folder else None

    def restore_rng(self) -> None:
        from fastnoise.eval import state as S

        if self.rng is not None:
            S.restore_rng(self.rng, self.device)
            self.rng = None

    def save(
        self, done: tuple[int, int], tallies: list[_Tally], counter: _ForwardCounter | None
    ) -> None:
        from fastnoise.eval import state as S

        if self.path is None:
            return
        assert counter is not None
        S.save_state(
            self.path, self.fingerprint, "evaluate",
            repeat=done[0], batch=done[1], tallies=[_tally_state(t) for t in tallies],
            passes=list(counter.passes), rows=list(counter.rows),
            seconds=list(counter.seconds), rng=S.rng_state(self.device),
        )  # fmt: skip

    def save_adv(self, name: str, batch: int, x_adv: torch.Tensor, y: torch.Tensor, at: int):
        if self.adv is not None:
            self.adv.add(name, batch, x_adv, y, torch.arange(at, at + len(y)))

    def finish(self) -> None:
        if self.adv is not None:
            self.adv.finish()

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _tally_state(t: _Tally) -> dict[str, Any]:
    """A tally as plain tensors and ints (for ``torch.load(weights_only=True)``)."""
    return {
        "n": t.n,
        **{f: getattr(t, f).detach().cpu() for f in (*_COUNTS, *_PER_ATTACK)},
        "outcomes": [_cat(o, torch.bool) for o in t.outcomes],
    }


def _tally_from(saved: dict[str, Any], n_attacks: int, device: torch.device) -> _Tally:
    t = _Tally(n_attacks, device)
    t.n = int(saved["n"])
    for f in (*_COUNTS, *_PER_ATTACK):
        setattr(t, f, saved[f].to(device))
    t.outcomes = [[o.to(device)] for o in saved["outcomes"]]
    return t


ESTIMATE_WARN_S = 600  # print the projected time of runs longer than 10 minutes


def _n_samples(loader: Iterable[Any]) -> int | None:
    """Samples per repeat when known up front (for the progress bar and the estimate);
    None otherwise. Malformed batches are left for _batches to name."""
    try:
        if getattr(loader, "num_samples", None) is not None:
            return int(loader.num_samples)
        if isinstance(loader, list):
            return sum(len(batch[1]) for batch in loader)
        dataset = getattr(loader, "dataset", None)
        return len(dataset) if dataset is not None else None
    except (TypeError, IndexError):
        return None


def _run(
    model: nn.Module,
    loader: Iterable[Any],
    attacks: Sequence[AttackLike | None],
    repeats: int,
    device: torch.device,
    progress: bool,
    desc: str,
    keep: int = 0,
    in_worst: Sequence[bool] | None = None,
    draws: int = 1,
    counter: _ForwardCounter | None = None,
    resume: _Resume | None = None,
) -> tuple[list[_Tally], tuple[torch.Tensor, torch.Tensor] | None]:
    """Run every attack on every batch, ``repeats`` times. ``None`` stands for "no attack"
    (eps = 0 in a sweep). ``in_worst`` picks the attacks of the per-sample worst case (all
    by default). Every prediction of a batch is judged on the same ``draws`` noise draws
    (:class:`_Judge`). Also returns the first ``keep`` samples, for the self-checks.
    A :class:`~fastnoise.eval.distributed.ShardedLoader` is this rank's share: its tallies
    are local (and keep the samples' positions), see :func:`_reduce_tallies`.
    ``resume`` (:class:`_Resume`) skips the work an interrupted run's state file records
    as done, saves the state after every batch and the adversarial examples of repeat 0."""
    sharded = isinstance(loader, D.ShardedLoader)
    announce = not sharded or loader.shard.is_main  # the time estimate: once, not per rank
    in_worst = [True] * len(attacks) if in_worst is None else list(in_worst)
    per_repeat = _n_samples(loader)
    total = repeats * per_repeat if per_repeat is not None else None
    judge = _Judge(model, device, draws)
    kept_x: list[torch.Tensor] = []
    kept_y: list[torch.Tensor] = []
    tallies = []
    started = time.perf_counter()
    done_repeat, done_batch = resume.done if resume is not None else (0, 0)
    with tqdm(total=total, desc=desc, unit="sample", disable=not progress, leave=False) as bar:
        for repeat in range(repeats):
            if repeat < done_repeat:  # finished before the interruption
                assert resume is not None
                tallies.append(resume.tallies[repeat])
                bar.update(tallies[-1].n)
                if repeat == 0 and keep:  # the self-checks' samples
                    for x, y in _batches(loader, device):
                        if sum(len(k) for k in kept_y) >= keep:
                            break
                        kept_x.append(x)
                        kept_y.append(y)
                continue
            if resume is not None and repeat == done_repeat and done_batch == 0:
                resume.restore_rng()
            partial = resume is not None and repeat == done_repeat and done_batch > 0
            tally = resume.tallies[repeat] if partial else _Tally(len(attacks), device)
            for batch, (x, y, index) in enumerate(_indexed_batches(loader, device)):
                if index is not None:
                    tally.index.append(index)
                if repeat == 0 and sum(len(k) for k in kept_y) < keep:
                    kept_x.append(x)
                    kept_y.append(y)
                if partial and batch < done_batch:
                    bar.update(len(y))
                    continue
                if partial and batch == done_batch:
                    resume.restore_rng()
                judge.new_batch()
                clean, clean_majority, clean_all = _votes(judge.predictions(x), y)
                survived, survived_all = clean.clone(), clean_all.clone()
                tally.outcomes[0].append(clean)
                for i, attack in enumerate(attacks):
                    if attack is None:
                        hit, majority, every = clean, clean_majority, clean_all
                    else:
                        bar.set_description(f"{desc}: {attack.name}", refresh=False)
                        guard = counter.attack(i, device) if counter else contextlib.nullcontext()
                        with guard, torch.enable_grad():
                            x_adv = attack(x, y).detach()
                        hit, majority, every = _votes(judge.predictions(x_adv), y)
                        if resume is not None and repeat == 0:
                            resume.save_adv(attack.name, batch, x_adv, y, tally.n)
                    tally.attacks[i] += hit.sum()
                    tally.attacks_majority[i] += majority.sum()
                    tally.attacks_all[i] += every.sum()
                    tally.outcomes[i + 1].append(hit)
                    if in_worst[i]:
                        survived &= hit
                        survived_all &= every
                tally.clean += clean.sum()
                tally.clean_majority += clean_majority.sum()
                tally.clean_all += clean_all.sum()
                tally.worst += survived.sum()
                tally.worst_all += survived_all.sum()
                if tally.n == 0 and repeat == 0 and total and announce:
                    _print_estimate(time.perf_counter() - started, len(y), total, bar)
                tally.n += len(y)
                bar.update(len(y))
                if resume is not None:
                    resume.save((repeat, batch + 1), [*tallies, tally], counter)
            # Sharded, a rank may hold no samples: _reduce_tallies checks the run's counts.
            if tally.n == 0 and not sharded:
                raise ValueError("loader yielded no samples")
            if tallies and tally.n != tallies[0].n and not sharded:
                raise ValueError(
                    f"loader must yield the same samples every repeat ({tallies[0].n} then "
                    f"{tally.n}); do not use drop_last with a random sampler"
                )
            tallies.append(tally)
            if resume is not None:
                resume.save((repeat + 1, 0), tallies, counter)
            if tally.n:
                bar.set_postfix(clean=f"{100 * int(tally.clean) / tally.n:.1f}%", refresh=False)
    if resume is not None and done_repeat >= repeats:  # all done: the checks' stream
        resume.restore_rng()
    kept = (torch.cat(kept_x)[:keep], torch.cat(kept_y)[:keep]) if kept_y else None
    return tallies, kept


def _print_estimate(first_batch_s: float, batch: int, total: int, bar: tqdm) -> None:
    """After the first batch: the whole run's projected time, when it is long."""
    projected = first_batch_s * total / max(batch, 1)
    if projected > ESTIMATE_WARN_S:
        bar.write(
            f"fastnoise: this run will take about {projected / 3600:.1f} h "
            f"({first_batch_s:.1f} s for the first {batch} samples, {total} to go through); "
            "lower --limit, --repeats or the attacks' budgets for a quicker estimate"
        )


def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    attacks: Sequence[AttackLike] | Mapping[str, AttackLike] | None = None,
    repeats: int = 5,
    device: torch.device | str | None = None,
    progress: bool = True,
    *,
    checks: bool = True,
    check_samples: int = 64,
    unbounded_attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    seed: int | None = None,
    batch_size: int = 128,
    draws: int = 1,
    protocol: str | None = None,
    eps: float | None = None,
    distributed: bool | None = None,
    state_file: str | os.PathLike[str] | None = None,
    save_adv: str | os.PathLike[str] | None = None,
) -> RobustnessReport:
    """Clean and robust accuracy (mean ± std over ``repeats``) plus the self-checks.

    Every prediction for one sample (clean, and each attack's result) is judged on the same
    noise draw, so the per-sample worst case compares like with like and the self-checks
    can pair outcomes. ``draws`` > 1 judges each on ``draws`` draws and also reports, for
    a randomized model, the majority vote over them and the fraction correct in every
    one (robust against an attacker allowed ``draws`` tries); the headline accuracy stays
    the expected accuracy of one draw (draw 0).

    ``protocol="pnil"`` or ``"l2p"`` (instead of ``attacks``) runs that paper's attacks at
    budget ``eps`` (:mod:`fastnoise.eval.protocols`; ``get_protocol(name).eps_for(data
    set)`` gives the paper's); an attack the protocol runs on a random subset (PNIL's
    SPSA on 1000 images) is reported with its own sample count.

    ``loader`` yields ``(x, y)`` batches of [0, 1] pixels, the same samples every repeat,
    or is one ``(x, y)`` pair of tensors, attacked in batches of ``batch_size``.
    ``device`` defaults to the model's; the batches are moved there. The model is put in
    eval mode with its parameters frozen during the run; both are restored afterwards, so
    no parameter gradient is produced. ``checks`` runs the model-level self-checks on the
    first ``check_samples`` samples (``unbounded_attack`` replaces the default PGD with
    eps = 1); ``seed`` makes the noise reproducible without touching the global RNG state.

    Under ``torchrun`` (``torch.distributed`` initialized with W > 1 ranks; ``distributed``
    = True insists on it, False evaluates everything on every rank) each rank attacks its
    own share of the samples, with its own noise (see :mod:`fastnoise.eval.distributed` for
    how loaders are sharded; pass the plain model, not a DistributedDataParallel wrapper).
    Every count, and the attacks' forward passes and seconds (device-seconds, summed), is
    summed over the ranks and the outcomes gathered in sample order, so every rank returns
    the same report. The model-level self-checks run on rank 0's first ``check_samples``
    samples and are broadcast; ``meta`` holds rank 0's device and time and the world size.
    On a deterministic model the counts equal a single process's.

    ``state_file`` makes the run resumable (:mod:`fastnoise.eval.state`): after every batch
    of every repeat the counts, per-sample outcomes, forward-pass counts and torch's RNG
    state are written there; a rerun with the same arguments skips the done batches and
    continues the same random stream, so it returns the report of an uninterrupted run
    (but for the seconds). A file of a run with other settings is refused. The file is
    deleted when the run finishes. The loader must yield the same batches in the same
    order on every pass. ``save_adv`` (a folder) receives, per attack, the final
    adversarial examples of repeat 0 as ``<attack>.pt``: a dict of ``x_adv`` (the input's
    dtype), ``y`` and ``index`` (the samples' positions in the loader's order). Sharded
    runs refuse both (one process per run: rerun without ``torchrun`` to use them).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    limited: list[tuple[AttackLike, int]] = []
    if protocol is not None:
        if attacks:
            raise ValueError("pass attacks or protocol=, not both: the protocol sets the attacks")
        if eps is None:
            raise ValueError(
                "protocol= needs eps=, the budget (get_protocol(name).eps_for(dataset) gives "
                "the paper's)"
            )
        from fastnoise.eval.protocols import get_protocol

        built = get_protocol(protocol).build(model, v.check_non_negative_number("eps", eps))
        attacks = [a for a, limit in built if limit is None]
        limited = [(a, limit) for a, limit in built if limit is not None]
    elif attacks is None:
        raise TypeError("evaluate needs attacks (or protocol= and eps=)")
    if isinstance(attacks, Mapping):
        attacks = list(attacks.values())
    items = _check_attacks([*attacks, *(a for a, _ in limited)])[: len(attacks)]
    v.check_positive_int("repeats", repeats)
    v.check_positive_int("check_samples", check_samples)
    v.check_positive_int("draws", draws)
    shard = D.resolve(distributed)
    if shard.enabled:
        D.refuse_ddp(model, [*items, *(a for a, _ in limited)])
        progress = progress and shard.is_main
        if state_file is not None or save_adv is not None:
            raise ValueError(
                "state_file and save_adv are not supported in a sharded (torchrun) run; "
                "run in one process to resume or save adversarial examples"
            )
    loader = _as_loader(loader, batch_size, shard)
    device = _resolve_device(model, device)
    bounded = [not math.isinf(float(a.eps)) for a in items]
    in_worst = bounded if any(bounded) else [True] * len(items)
    started = time.perf_counter()
    counter = _ForwardCounter(model, len(items))
    keep = check_samples if shard.is_main else 0
    resume = None
    if state_file is not None or save_adv is not None:
        fingerprint = {
            "attacks": [attack_settings(a) for a in items],
            "names": [a.name for a in items],
            "repeats": repeats, "draws": draws, "seed": seed, "batch_size": batch_size,
            "n_samples": _n_samples(loader), "protocol": protocol, "eps": eps,
        }  # fmt: skip
        try:
            resume = _Resume(
                None if state_file is None else os.fspath(state_file), fingerprint, device,
                len(items), counter, None if save_adv is None else os.fspath(save_adv),
                [a.name for a in items],
            )  # fmt: skip
        except BaseException:
            counter.handle.remove()
            raise
    with _frozen_eval(model), _seeded(seed, device, shard):
        try:
            tallies, kept = _run(
                model, loader, items, repeats, device, progress, "evaluate", keep, in_worst,
                draws, counter, resume,
            )  # fmt: skip
        finally:
            counter.handle.remove()
        if resume is not None:
            resume.finish()
        if shard.enabled:
            _reduce_tallies(tallies, shard, counter)
        fractions = lambda pick: [int(pick(t)) / t.n for t in tallies]  # noqa: E731
        several = draws > 1
        report = RobustnessReport(
            n_samples=tallies[0].n,
            repeats=repeats,
            clean=fractions(lambda t: t.clean),
            attacks=[
                AttackResult(
                    name=a.name,
                    eps=float(a.eps),
                    norm=a.norm,
                    kind=a.kind,
                    accuracies=fractions(lambda t, i=i: t.attacks[i]),
                    eot=int(getattr(a, "eot", 1)),
                    settings=attack_settings(a),
                    majority=fractions(lambda t, i=i: t.attacks_majority[i]) if several else None,
                    all_draws=fractions(lambda t, i=i: t.attacks_all[i]) if several else None,
                    forward_passes=counter.passes[i],
                    forward_rows=counter.rows[i],
                    seconds=round(counter.seconds[i], 3),
                )
                for i, a in enumerate(items)
            ],
            worst_case=fractions(lambda t: t.worst),
            draws=draws,
            clean_majority=fractions(lambda t: t.clean_majority) if several else None,
            clean_all_draws=fractions(lambda t: t.clean_all) if several else None,
            worst_case_all_draws=fractions(lambda t: t.worst_all) if several else None,
            outcomes={
                name: torch.stack([torch.cat(t.outcomes[j]) for t in tallies]).cpu()
                for j, name in enumerate(["clean", *(a.name for a in items)])
            },
        )
        if checks and shard.enabled:  # rank 0 has samples whenever the run has any
            found = model_checks(model, *kept, unbounded_attack) if shard.is_main else None
            found, report.randomized = shard.broadcast(found)
            report.checks = found + result_checks(report)
        elif checks and kept is not None:
            found, report.randomized = model_checks(model, *kept, unbounded_attack)
            report.checks = found + result_checks(report)
    order = tallies[0].index[0] if shard.enabled else None
    for attack, limit in limited:
        _add_random_subset_attack(
            report, model, loader, attack, limit, repeats=repeats, device=device,
            progress=progress, seed=seed, draws=draws, batch_size=batch_size, order=order,
            distributed=shard.enabled,
        )  # fmt: skip
    where, seconds = str(device), round(time.perf_counter() - started, 3)
    if shard.enabled:
        where, seconds = shard.broadcast((where, seconds))
        report.meta["world_size"] = shard.world_size
    report.meta.update(
        device=where,
        torch=torch.__version__,
        seconds=seconds,
        seed=seed,
        protocol=protocol,
    )
    if resume is not None:
        resume.remove()
    return report


def _add_random_subset_attack(
    report: RobustnessReport,
    model: nn.Module,
    loader: Iterable[Any],
    attack: AttackLike,
    limit: int,
    *,
    repeats: int,
    device: torch.device,
    progress: bool,
    seed: int | None,
    draws: int,
    batch_size: int,
    order: torch.Tensor | None = None,
    distributed: bool = False,
) -> None:
    """Run ``attack`` on ``limit`` of the loader's samples drawn at random (seeded by
    ``seed``, else 0), as the PNIL protocol runs SPSA on 1000 images, and add its result
    with its own sample count. It stays out of the per-sample worst case (other samples).
    Sharded (``loader`` this rank's share, ``order`` the run's sample positions in order),
    the same samples are drawn and each rank attacks those it holds."""
    generator = torch.Generator().manual_seed(0 if seed is None else seed)
    if isinstance(loader, D.ShardedLoader):
        assert order is not None
        wanted = order[torch.randperm(len(order), generator=generator)[:limit]]
        none = torch.zeros(0, dtype=torch.long)
        x, y, index = _local_samples(loader, device) or (none, none, none)
        rows = torch.isin(index.cpu(), wanted).nonzero().flatten()
        data: Any = D.ShardedLoader.of_local(
            x[rows.to(x.device)], y[rows.to(y.device)], index.cpu()[rows], batch_size, loader.shard
        )
    else:
        x, y = (torch.cat(parts) for parts in zip(*_batches(loader, device), strict=True))
        picked = torch.randperm(len(y), generator=generator)[:limit].sort().values.to(device)
        data = (x[picked], y[picked])
    part = evaluate(
        model, data, [attack], repeats, device, progress, checks=False, seed=seed,
        draws=draws, batch_size=batch_size, distributed=distributed,
    )  # fmt: skip
    result = part.attacks[0]
    result.n_samples = part.n_samples
    report.attacks.append(result)
    report.meta.setdefault("subsets", {})[result.name] = {
        "samples": part.n_samples,
        "drawn_with_seed": 0 if seed is None else seed,
        "clean": part.clean,
    }
    if report.checks:
        refreshed = result_checks(report)
        names = {c.name for c in refreshed}
        report.checks = [c for c in report.checks if c.name not in names] + refreshed


_SETTING_TYPES = (bool, int, float, str, type(None))


def attack_settings(attack: AttackLike) -> dict[str, Any]:
    """An attack's public settings (numbers, strings, flags and their tuples), for the
    report: enough to rerun it. The model and other objects are left out."""
    settings: dict[str, Any] = {"class": type(attack).__name__}
    for key, value in sorted(vars(attack).items()):
        if key.startswith("_") or key == "model":
            continue
        if isinstance(value, (tuple, list)) and all(isinstance(x, _SETTING_TYPES) for x in value):
            value = list(value)
        elif not isinstance(value, _SETTING_TYPES):
            continue
        settings[key] = value
    return settings


def sweep_eps(
    model: nn.Module,
    loader: Iterable[Any],
    attack: str | Callable[[float], AttackLike],
    eps_values: Sequence[float],
    repeats: int = 3,
    device: torch.device | str | None = None,
    progress: bool = True,
    *,
    label: str | None = None,
    seed: int | None = None,
    batch_size: int = 128,
    distributed: bool | None = None,
    **attack_kwargs: Any,
) -> SweepResult:
    """Accuracy as a function of the budget (Learn2Perturb Figures 2-3).

    ``loader``: as for :func:`evaluate` (a loader or an ``(x, y)`` pair of tensors), and
    sharded over the ranks under ``torchrun`` as there (``distributed``).

    ``attack`` is a name for :func:`fastnoise.attacks.build` (``attack_kwargs`` go there
    too) or a factory ``eps -> attack``. eps = 0 means no attack: the clean accuracy.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(attack, str):
        from fastnoise.attacks import build

        name = attack

        def factory(eps: float) -> AttackLike:
            return build(name, model, eps, **attack_kwargs)

    elif callable(attack):
        factory = attack
    else:
        raise TypeError(
            "attack must be an attack name or a callable eps -> attack, "
            f"got {type(attack).__name__}"
        )
    if isinstance(eps_values, (str, bytes)) or len(eps_values) == 0:
        raise ValueError("eps_values must be a non-empty sequence of numbers")
    eps_list = [
        v.check_non_negative_number(f"eps_values[{i}]", e) for i, e in enumerate(eps_values)
    ]
    v.check_positive_int("repeats", repeats)
    shard = D.resolve(distributed)
    loader = _as_loader(loader, batch_size, shard)
    device = _resolve_device(model, device)
    built = [factory(e) if e > 0 else None for e in eps_list]
    _check_attacks([a for a in built if a is not None], distinct=False)  # same attack, many eps
    if shard.enabled:
        D.refuse_ddp(model, [a for a in built if a is not None])
        progress = progress and shard.is_main
    first = next((a for a in built if a is not None), None)
    if label is None:
        label = attack if isinstance(attack, str) else (first.name if first else "sweep")
    with _frozen_eval(model), _seeded(seed, device, shard):
        tallies, _ = _run(model, loader, built, repeats, device, progress, f"sweep {label}")
        if shard.enabled:
            _reduce_tallies(tallies, shard, outcomes=False)
    return SweepResult(
        label=label,
        norm=first.norm if first is not None else "linf",
        eps_values=eps_list,
        accuracies=[[int(t.attacks[i]) / t.n for t in tallies] for i in range(len(built))],
        n_samples=tallies[0].n,
    )
