"""``fastnoise eval``: evaluate a checkpoint against the attack suite and save the report.

Example::

    fastnoise eval --checkpoint runs/l2p/model.pt --dataset cifar10 \\
        --attacks fgsm,pgd,eot-pgd --eps 8/255 --repeats 5 --limit 1000 --out runs/l2p/eval

``--eps`` takes fractions and comma lists: the first value is the budget of the table;
with several values every L-inf white-box attack is also swept over all of them (plus 0).
CW runs as a minimum-norm L2 attack (bound: ``--l2-eps``) and "pixel" as an L0 attack,
so neither takes the L-inf budget.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import torch
from torch import nn

__all__ = ["add_arguments", "run", "parse_eps", "load_model", "pgd_step_size"]

WHITE_BOX = ("single-step", "iterative")

DEFAULT_ATTACKS = "fgsm,pgd,eot-pgd"


def parse_eps(text: str) -> list[float]:
    """``"8/255"`` -> ``[0.0313...]``; ``"2/255,8/255"`` -> two values; ``inf`` allowed."""
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = float(part) if part.lower() in ("inf", "infinity") else float(Fraction(part))
        except (ValueError, ZeroDivisionError):
            raise argparse.ArgumentTypeError(
                f"--eps expects numbers or fractions like 8/255, comma-separated; got {part!r}"
            ) from None
        if value < 0 or math.isnan(value):
            raise argparse.ArgumentTypeError(f"--eps values must be >= 0, got {part!r}")
        values.append(value)
    return values


def _attack_names(text: str) -> list[str]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("--attacks needs at least one attack name")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (.pt) to evaluate")
    parser.add_argument(
        "--dataset",
        default=None,
        help="mnist, fashion-mnist, cifar10, cifar100, embedded "
        "(default: the checkpoint's 'dataset' entry)",
    )
    parser.add_argument("--root", default=None, help="dataset folder (torchvision layout)")
    parser.add_argument(
        "--attacks",
        type=_attack_names,
        default=_attack_names(DEFAULT_ATTACKS),
        help="comma list from fgsm,pgd,eot-pgd,cw,spsa,pixel,apgd,apgd-dlr,transfer "
        f"(default {DEFAULT_ATTACKS})",
    )
    parser.add_argument(
        "--eps",
        type=parse_eps,
        default=parse_eps("8/255"),
        help="budget, e.g. 8/255; a comma list also sweeps accuracy vs eps (first = table)",
    )
    parser.add_argument(
        "--l2-eps",
        type=float,
        default=math.inf,
        help="L2 bound for the minimum-norm CW attack (default: none, as in Learn2Perturb)",
    )
    parser.add_argument(
        "--pgd-steps", type=int, default=7, help="steps of pgd/eot-pgd/transfer (default 7)"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="PGD step size (default: max(0.01, 2 * eps / steps), so the ball is reachable)",
    )
    parser.add_argument(
        "--eot", type=int, default=None, help="noise draws per gradient for eot-pgd and apgd"
    )
    parser.add_argument(
        "--spsa-steps", type=int, default=100, help="SPSA iterations (default 100, as the paper)"
    )
    parser.add_argument(
        "--spsa-samples",
        type=int,
        default=2048,
        help="SPSA perturbation samples per step (default 2048; lower it for a quick CPU run)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="noise redraws (default 5)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N samples")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default=None, help="report folder (default: <checkpoint>-eval)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument(
        "--source-checkpoint", default=None, help="surrogate model for the transfer attack"
    )
    parser.add_argument(
        "--sweep-attacks",
        type=_attack_names,
        default=None,
        help="attacks to sweep when --eps is a list (default: the L-inf white-box ones)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for noise and attacks")
    parser.add_argument("--check-samples", type=int, default=64, help="samples for self-checks")
    parser.add_argument("--no-checks", action="store_true", help="skip the self-checks")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 if any self-check fails"
    )


def load_model(path: str, device: torch.device) -> nn.Module:
    """Rebuild a model from a training checkpoint (eval mode), via the training layer."""
    from fastnoise.train.checkpoint import load_model as train_load_model

    return train_load_model(path, device)


def _checkpoint_entry(path: str, key: str) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True).get(key)


class _TensorBatches:
    """Batches sliced from tensors already on the device: no per-sample collation."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self.y), self.batch_size):
            yield self.x[i : i + self.batch_size], self.y[i : i + self.batch_size]


def pgd_step_size(eps: float, steps: int) -> float:
    """Learn2Perturb's 0.01, raised to 2 * eps / steps where that is too short to cross
    the eps-ball (PNIL Sec. 4: "reach every point in the eps-ball with 2 eps / steps")."""
    return max(0.01, 2 * eps / steps)


def _attack_builder(
    args: argparse.Namespace, model: nn.Module, source: nn.Module | None
) -> Callable[[str, float], Any]:
    """``(name, eps) -> attack`` with the command line's attack settings."""
    from fastnoise.attacks import build

    def build_attack(name: str, eps: float) -> Any:
        kw: dict[str, Any] = {}
        if name in ("pgd", "eot-pgd", "transfer"):
            kw["steps"] = args.pgd_steps
            kw["alpha"] = args.alpha or pgd_step_size(eps, args.pgd_steps)
        if name in ("eot-pgd", "apgd", "apgd-dlr") and args.eot is not None:
            kw["eot"] = args.eot
        if name == "spsa":
            kw["steps"], kw["samples"] = args.spsa_steps, args.spsa_samples
        if name == "transfer":
            return build(name, model, eps, source_model=source, **kw)
        if name == "cw":  # minimum-norm L2: the L-inf budget means nothing to it
            return build(name, model, args.l2_eps)
        if name == "pixel":  # L0: unbounded in L-inf, limited by its pixel count instead
            return build(name, model, math.inf)
        return build(name, model, eps, **kw)

    return build_attack


def _error(message: str) -> int:
    print(f"fastnoise eval: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from fastnoise.attacks import ATTACK_NAMES
    from fastnoise.data import as_tensors, load_dataset
    from fastnoise.eval.evaluate import evaluate, sweep_eps

    flags = (
        "repeats",
        "batch_size",
        "check_samples",
        "pgd_steps",
        "spsa_steps",
        "spsa_samples",
        "limit",
        "eot",
    )
    for flag in flags:
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            return _error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    unknown = [n for n in (*args.attacks, *(args.sweep_attacks or ())) if n not in ATTACK_NAMES]
    if unknown:
        return _error(f"unknown attack(s) {unknown}; choose from {', '.join(ATTACK_NAMES)}")
    if not os.path.isfile(args.checkpoint):
        return _error(f"--checkpoint {args.checkpoint!r} is not a file")
    if "transfer" in args.attacks and not args.source_checkpoint:
        return _error("the transfer attack needs --source-checkpoint (the surrogate model)")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dataset = args.dataset or _checkpoint_entry(args.checkpoint, "dataset")
    if not dataset:
        return _error("--dataset is required (the checkpoint does not name its dataset)")

    model = load_model(args.checkpoint, device)
    source = load_model(args.source_checkpoint, device) if args.source_checkpoint else None
    x, y = as_tensors(load_dataset(dataset, root=args.root, train=False), limit=args.limit)
    loader = _TensorBatches(x.to(device), y.to(device), args.batch_size)
    eps = args.eps[0]
    build_attack = _attack_builder(args, model, source)
    try:
        attacks = [build_attack(n, eps) for n in args.attacks]
    except (TypeError, ValueError) as err:
        return _error(f"--attacks: {err}")

    progress = not args.no_progress
    report = evaluate(
        model,
        loader,
        attacks,
        repeats=args.repeats,
        progress=progress,
        checks=not args.no_checks,
        check_samples=args.check_samples,
        seed=args.seed,
    )
    if len(args.eps) > 1:
        names = args.sweep_attacks or [
            n
            for n, a in zip(args.attacks, attacks, strict=True)
            if a.kind in WHITE_BOX and a.norm == "linf"
        ]
        grid = sorted({0.0, *args.eps})
        for name in names:
            sweep = sweep_eps(
                model,
                loader,
                lambda e, name=name: build_attack(name, e),
                grid,
                repeats=args.repeats,
                progress=progress,
                label=name,
                seed=args.seed,
            )
            report.add_sweep(sweep)

    report.meta.update(
        checkpoint=os.path.abspath(args.checkpoint),
        model_config=_checkpoint_entry(args.checkpoint, "model_config"),
        dataset=dataset,
        attacks=list(args.attacks),
        eps=list(args.eps),
    )
    out = args.out or os.path.splitext(args.checkpoint)[0] + "-eval"
    paths = report.save(out)
    print(report.to_markdown())
    print("Report written to " + ", ".join(paths.values()))
    failed = [c.name for c in report.checks if c.status == "fail"]
    if failed:
        print(f"Self-checks failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if (failed and args.strict) else 0
