"""Robust accuracy of a (randomized) model under a suite of attacks.

The defenses are random, so one number is not a result: every repeat redraws the noise
and reruns every attack, and the report gives mean ± std over repeats. Besides the
per-attack accuracy, a sample counts towards the per-sample worst case only if it is
classified correctly clean and under every attack in the same repeat (AutoAttack's rule);
unbounded attacks (eps = inf) join that worst case only when no bounded attack is present.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from fastnoise import _validation as v
from fastnoise.eval.checks import model_checks, result_checks
from fastnoise.eval.report import AttackResult, RobustnessReport, SweepResult

__all__ = ["AttackLike", "evaluate", "sweep_eps"]

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
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's generators for reproducible noise, without leaking the seed outside."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def _as_loader(data: Iterable[Any], batch_size: int) -> Iterable[Any]:
    """An ``(x, y)`` pair of tensors becomes a list of batches; a loader passes through.

    A loader yields pairs, so a pair whose items are tensors cannot be mistaken for one.
    """
    is_pair = isinstance(data, (tuple, list)) and len(data) == 2
    if not (is_pair and all(isinstance(t, torch.Tensor) for t in data)):
        return data
    x, y = data
    v.check_positive_int("batch_size", batch_size)
    if x.dim() == 0 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"an (x, y) pair needs x (N, ...) and labels y (N,), got shapes "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    return list(zip(x.split(batch_size), y.split(batch_size), strict=True))


def _batches(loader: Iterable[Any], device: torch.device) -> Iterator[tuple[torch.Tensor, ...]]:
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError(
                "loader must be an (x, y) pair of tensors or yield (x, y) pairs, got "
                f"batches of type {type(batch).__name__}"
            )
        yield batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)


class _Tally:
    """Per-repeat counts of correct predictions, kept on the device (no sync per batch)."""

    def __init__(self, n_attacks: int, device: torch.device) -> None:
        self.n = 0
        self.clean = torch.zeros((), dtype=torch.long, device=device)
        self.attacks = torch.zeros(n_attacks, dtype=torch.long, device=device)
        self.worst = torch.zeros((), dtype=torch.long, device=device)


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
) -> tuple[list[_Tally], tuple[torch.Tensor, torch.Tensor] | None]:
    """Run every attack on every batch, ``repeats`` times. ``None`` stands for "no attack"
    (eps = 0 in a sweep). ``in_worst`` picks the attacks of the per-sample worst case (all
    by default). Also returns the first ``keep`` samples, for the self-checks."""
    in_worst = [True] * len(attacks) if in_worst is None else list(in_worst)
    total = repeats * len(loader) if hasattr(loader, "__len__") else None
    kept_x: list[torch.Tensor] = []
    kept_y: list[torch.Tensor] = []
    tallies = []
    with tqdm(total=total, desc=desc, unit="batch", disable=not progress, leave=False) as bar:
        for repeat in range(repeats):
            tally = _Tally(len(attacks), device)
            for x, y in _batches(loader, device):
                if repeat == 0 and sum(len(k) for k in kept_y) < keep:
                    kept_x.append(x)
                    kept_y.append(y)
                with torch.no_grad():
                    correct = model(x).argmax(1) == y
                survived = correct.clone()
                for i, attack in enumerate(attacks):
                    if attack is None:
                        hit = correct
                    else:
                        with torch.enable_grad():
                            x_adv = attack(x, y).detach()
                        with torch.no_grad():
                            hit = model(x_adv).argmax(1) == y
                    tally.attacks[i] += hit.sum()
                    if in_worst[i]:
                        survived &= hit
                tally.clean += correct.sum()
                tally.worst += survived.sum()
                tally.n += len(y)
                bar.update(1)
            if tally.n == 0:
                raise ValueError("loader yielded no samples")
            if tallies and tally.n != tallies[0].n:
                raise ValueError(
                    f"loader must yield the same samples every repeat ({tallies[0].n} then "
                    f"{tally.n}); do not use drop_last with a random sampler"
                )
            tallies.append(tally)
            bar.set_postfix(clean=f"{100 * int(tally.clean) / tally.n:.1f}%", refresh=False)
    kept = (torch.cat(kept_x)[:keep], torch.cat(kept_y)[:keep]) if kept_y else None
    return tallies, kept


def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    attacks: Sequence[AttackLike] | Mapping[str, AttackLike],
    repeats: int = 5,
    device: torch.device | str | None = None,
    progress: bool = True,
    *,
    checks: bool = True,
    check_samples: int = 64,
    unbounded_attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    seed: int | None = None,
    batch_size: int = 128,
) -> RobustnessReport:
    """Clean and robust accuracy (mean ± std over ``repeats``) plus the self-checks.

    ``loader`` yields ``(x, y)`` batches of [0, 1] pixels, the same samples every repeat,
    or is one ``(x, y)`` pair of tensors, attacked in batches of ``batch_size``.
    ``device`` defaults to the model's; the batches are moved there. The model is put in
    eval mode with its parameters frozen during the run; both are restored afterwards, so
    no parameter gradient is produced. ``checks`` runs the model-level self-checks on the
    first ``check_samples`` samples (``unbounded_attack`` replaces the default PGD with
    eps = 1); ``seed`` makes the noise reproducible without touching the global RNG state.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    items = _check_attacks(attacks)
    v.check_positive_int("repeats", repeats)
    v.check_positive_int("check_samples", check_samples)
    loader = _as_loader(loader, batch_size)
    device = _resolve_device(model, device)
    bounded = [not math.isinf(float(a.eps)) for a in items]
    in_worst = bounded if any(bounded) else [True] * len(items)
    started = time.perf_counter()
    with _frozen_eval(model), _seeded(seed, device):
        tallies, kept = _run(
            model, loader, items, repeats, device, progress, "evaluate", check_samples, in_worst
        )
        report = RobustnessReport(
            n_samples=tallies[0].n,
            repeats=repeats,
            clean=[int(t.clean) / t.n for t in tallies],
            attacks=[
                AttackResult(
                    name=a.name,
                    eps=float(a.eps),
                    norm=a.norm,
                    kind=a.kind,
                    accuracies=[int(t.attacks[i]) / t.n for t in tallies],
                    eot=int(getattr(a, "eot", 1)),
                )
                for i, a in enumerate(items)
            ],
            worst_case=[int(t.worst) / t.n for t in tallies],
        )
        if checks and kept is not None:
            found, report.randomized = model_checks(model, *kept, unbounded_attack)
            report.checks = found + result_checks(report)
    report.meta.update(
        device=str(device),
        torch=torch.__version__,
        seconds=round(time.perf_counter() - started, 3),
        seed=seed,
    )
    return report


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
    **attack_kwargs: Any,
) -> SweepResult:
    """Accuracy as a function of the budget (Learn2Perturb Figures 2-3).

    ``loader``: as for :func:`evaluate` (a loader or an ``(x, y)`` pair of tensors).

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
    loader = _as_loader(loader, batch_size)
    device = _resolve_device(model, device)
    built = [factory(e) if e > 0 else None for e in eps_list]
    _check_attacks([a for a in built if a is not None], distinct=False)  # same attack, many eps
    first = next((a for a in built if a is not None), None)
    if label is None:
        label = attack if isinstance(attack, str) else (first.name if first else "sweep")
    with _frozen_eval(model), _seeded(seed, device):
        tallies, _ = _run(model, loader, built, repeats, device, progress, f"sweep {label}")
    return SweepResult(
        label=label,
        norm=first.norm if first is not None else "linf",
        eps_values=eps_list,
        accuracies=[[int(t.attacks[i]) / t.n for t in tallies] for i in range(len(built))],
        n_samples=tallies[0].n,
    )
