"""``fastnoise eval``: evaluate a checkpoint against the attack suite and save the report.

Example::

    fastnoise eval --checkpoint runs/l2p/model.pt --dataset cifar10 \\
        --attacks fgsm,pgd,eot-pgd --eps 8/255 --repeats 5 --limit 1000 --out runs/l2p/eval

An interrupted run resumes when rerun with the same arguments (its state is
``<out>/eval-state.pt``, or ``autoattack-state.pt``; ``--fresh`` discards it), and
``--save-adv`` writes the adversarial examples into ``<out>/adv/``.

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
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fastnoise.cli_errors import CLIError
from fastnoise.cli_values import parse_fraction_list
from fastnoise.eval.protocols import PROTOCOLS, get_protocol

__all__ = ["add_arguments", "run", "parse_eps", "load_model", "pgd_step_size"]

WHITE_BOX = ("single-step", "iterative")

DEFAULT_ATTACKS = "fgsm,pgd,eot-pgd"


def parse_eps(text: str) -> list[float]:
    """``"8/255"`` -> ``[0.0313...]``; ``"2/255,8/255"`` -> two values; ``inf`` allowed
    (the same number parser as ``fastnoise train --eps``)."""
    try:
        return parse_fraction_list(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(
            f"--eps expects numbers or fractions like 8/255, comma-separated: {error}"
        ) from None


def _attack_names(text: str) -> list[str]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("--attacks needs at least one attack name")
    return names


def _dataset_name(text: str) -> str:
    from fastnoise.data import dataset_info

    try:
        return dataset_info(text).name  # aliases such as fashion_mnist
    except ValueError:
        return text  # argparse's choices check names the valid ones


def add_data_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--dataset, --data-root and --download, shared by the commands that read a test set."""
    from fastnoise.data import DATASETS

    parser.add_argument(
        "--dataset",
        default=None,
        type=_dataset_name,
        choices=list(DATASETS),
        help=f"{what} (default: the data set the checkpoint was trained on)",
    )
    parser.add_argument(
        "--data-root",
        "--root",
        dest="root",
        default=None,
        metavar="DIR",
        help="folder holding the data set in torchvision's layout "
        "(default: $FASTNOISE_DATA_ROOT, else the default folder)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="download the data set into the data folder if it is missing (needs internet)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastnoise.attacks import ATTACK_NAMES

    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the example's line
    parser.description = (
        "Evaluate a training checkpoint against the attack suite, with the noise redrawn\n"
        "--repeats times, and write report.md, report.json and plots. Pixels are in [0, 1],\n"
        "so budgets are in those units: --eps 8/255."
    )
    parser.epilog = (
        "example:\n  fastnoise eval --checkpoint runs/pnil/best.pt --attacks fgsm,pgd,eot-pgd "
        "--eps 8/255 --limit 1000"
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="model checkpoint (.pt) to evaluate, or a training run's folder: its best.pt "
        "(the epoch with the lowest adversarial validation loss) if it has one, else last.pt",
    )
    add_data_arguments(parser, "test set to attack")
    parser.add_argument(
        "--protocol",
        choices=sorted(PROTOCOLS),
        default=None,
        help="a paper's attacks and settings: pnil (PGD-50 with EOT-100, SPSA 100 x 2048 on "
        "1000 random images, eps by data set) or l2p (PGD-7 with step 0.01, EOT-PGD-80, "
        "C&W-L2); see fastnoise/eval/protocols.py. Replaces --attacks and the attack flags",
    )
    parser.add_argument(
        "--autoattack",
        choices=("standard", "rand"),
        default=None,
        help="run the AutoAttack cascade instead of --attacks (standard: APGD-CE, APGD-T, "
        "multi-targeted PGD, Square; rand: APGD-CE and APGD-DLR with EOT 20) and write "
        "autoattack.md, autoattack.json and robustbench.json",
    )
    parser.add_argument(
        "--attacks",
        type=_attack_names,
        default=None,
        metavar="NAMES",
        help=f"comma-separated attacks from {','.join(ATTACK_NAMES)} (default: {DEFAULT_ATTACKS})",
    )
    parser.add_argument(
        "--eps",
        type=parse_eps,
        default=None,
        metavar="EPS",
        help="L-inf budget in pixel units, e.g. 8/255 (default: 8/255, or the protocol's for "
        "the data set); a comma list also sweeps accuracy against eps, and its first value "
        "is the table's budget",
    )
    parser.add_argument(
        "--l2-eps",
        type=float,
        default=math.inf,
        help="L2 radius bound of the minimum-norm CW attack, in pixel units "
        "(default: none, as in Learn2Perturb)",
    )
    parser.add_argument(
        "--pgd-steps", type=int, default=7, help="steps of pgd, eot-pgd and transfer (default: 7)"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="PGD step size in pixel units (default: 2 * eps / steps, so every point of the "
        "eps-ball is reachable, as in PNIL Sec. 4.3)",
    )
    parser.add_argument(
        "--eot",
        type=int,
        default=None,
        help="noise draws averaged per gradient by eot-pgd and apgd (default: the attack's own)",
    )
    parser.add_argument(
        "--spsa-steps", type=int, default=100, help="SPSA iterations (default: 100, as the paper)"
    )
    parser.add_argument(
        "--spsa-samples",
        type=int,
        default=2048,
        help="SPSA perturbation samples per step (default: 2048; lower it for a quick CPU run)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="evaluations with fresh noise, reported as mean and std (default: 5)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="attack only the first N test images (default: all)"
    )
    parser.add_argument(
        "--draws",
        type=int,
        default=1,
        help="noise draws each prediction is judged on; above 1 the report adds the majority "
        "vote and the accuracy against an attacker with that many tries (default: 1)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=256, help="images per batch (default: 256)"
    )
    parser.add_argument(
        "--out", default=None, help="report folder (default: the checkpoint's path + '-eval')"
    )
    parser.add_argument(
        "--device", default=None, help="cuda, cuda:N or cpu (default: cuda if there is one)"
    )
    parser.add_argument(
        "--source-checkpoint", default=None, help="surrogate model for the transfer attack"
    )
    parser.add_argument(
        "--sweep-attacks",
        type=_attack_names,
        default=None,
        metavar="NAMES",
        help="attacks to sweep when --eps is a list (default: the L-inf white-box ones)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of noise and attacks (default: 0)"
    )
    parser.add_argument(
        "--check-samples", type=int, default=64, help="images used by the self-checks (default: 64)"
    )
    parser.add_argument(
        "--save-adv",
        action="store_true",
        help="write the adversarial examples into <out>/adv/ (per attack, repeat 0: "
        "<attack>.pt; with --autoattack: autoattack.pt with the broken mask)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="discard the state of an interrupted run in --out and start over (by default "
        "a rerun with the same arguments resumes it)",
    )
    parser.add_argument("--no-checks", action="store_true", help="skip the self-checks")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 if any self-check fails"
    )


def resolve_checkpoint(path: str) -> tuple[str, str | None]:
    """The checkpoint file ``--checkpoint`` means, and a note worth printing or None.

    A run folder means its best.pt when it has one (the model ``fit`` returns and the PNIL
    paper tests), else its last.pt. A file is taken as given; a last.pt with a best.pt
    beside it gets a note, since that is rarely the one to report."""
    from fastnoise.train.run_folder import BEST, LAST

    if os.path.isdir(path):
        for name in (BEST, LAST):
            if os.path.isfile(os.path.join(path, name)):
                chosen = os.path.join(path, name)
                return chosen, f"evaluating {chosen}"
        raise FileNotFoundError(f"--checkpoint {path!r} is a folder without {BEST} or {LAST}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--checkpoint {path!r} is not a file")
    beside = os.path.join(os.path.dirname(path), BEST)
    if os.path.basename(path) == LAST and os.path.isfile(beside):
        return path, (
            f"evaluating {LAST}, the last epoch; {beside} holds the epoch with the lowest "
            "adversarial validation loss (pass it, or the run folder, to evaluate that one)"
        )
    return path, None


def load_model(path: str, device: torch.device) -> nn.Module:
    """Rebuild a model from a training checkpoint (eval mode), via the training layer."""
    from fastnoise.train.checkpoint import load_model as train_load_model

    return train_load_model(path, device)


def _read_checkpoint(path: str) -> dict[str, Any]:
    from fastnoise.train.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path)
    except ValueError:  # a torch file but not a fastnoise checkpoint: its message says so
        raise
    except Exception as error:  # a truncated file, or not a torch file at all
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CLIError(
            f"--checkpoint {path!r} is not a readable checkpoint ({type(error).__name__}: "
            f"{first_line})"
        ) from None


def pgd_step_size(eps: float, steps: int) -> float:
    """2 * eps / steps: every point of the eps-ball is reachable (PNIL Sec. 4.3). No floor:
    Learn2Perturb's fixed 0.01 is the l2p protocol's (--protocol l2p)."""
    return 2 * eps / steps


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


EVAL_STATE = "eval-state.pt"
AUTOATTACK_STATE = "autoattack-state.pt"
ADV_FOLDER = "adv"


def _resumable(args: argparse.Namespace, out: str, name: str) -> dict[str, Any]:
    """``state_file`` and ``save_adv`` for evaluate/autoattack: the state lives in ``out``
    and a rerun resumes it (one line says so), unless --fresh. Not under torchrun: a
    sharded run is not resumable (every rank would need its own state)."""
    import torch.distributed as dist

    from fastnoise.eval.state import describe

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if args.save_adv:
            raise CLIError("--save-adv is not supported under torchrun; run in one process")
        return {}
    path = os.path.join(out, name)
    if args.fresh and os.path.exists(path):
        os.unlink(path)
    where = describe(path)
    if where is not None:
        print(f"fastnoise eval: resuming the interrupted run in {path} from {where}")
    kw: dict[str, Any] = {"state_file": path}
    if args.save_adv:
        kw["save_adv"] = os.path.join(out, ADV_FOLDER)
    return kw


def _interrupted(out: str) -> int:
    print(
        f"fastnoise eval: interrupted; its state is in {out}: rerun the same command to "
        "resume (--fresh starts over)",
        file=sys.stderr,
    )
    return 130


def _run_autoattack(args, model, loader, eps, dataset, out, progress, main_rank) -> int:
    import json

    from fastnoise.eval.autoattack import autoattack

    try:
        report = autoattack(
            model, loader, eps, "Linf", args.autoattack, seed=args.seed, progress=progress,
            draws=args.draws if args.draws > 1 else None, batch_size=args.batch_size,
            **_resumable(args, out, AUTOATTACK_STATE),
        )  # fmt: skip
    except KeyboardInterrupt:
        return _interrupted(out)
    if not main_rank:
        return 0
    report.meta.update(checkpoint=os.path.abspath(args.checkpoint), dataset=dataset)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "autoattack.md"), "w") as handle:
        handle.write(report.to_markdown())
    with open(os.path.join(out, "autoattack.json"), "w") as handle:
        json.dump(report.to_dict(), handle, indent=2)
    report.to_robustbench_json(os.path.join(out, "robustbench.json"), dataset=dataset)
    print(report.to_markdown())
    print(f"AutoAttack report written to {out}")
    return 0


def _error(message: str) -> int:
    print(f"fastnoise eval: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """``fastnoise eval``; under ``torchrun`` every rank evaluates its share of the test
    set (fastnoise.eval shards it and sums the counts) and rank 0 writes the reports."""
    from fastnoise.train.distributed import cleanup, setup

    try:
        info, device = setup(args.device or "auto")
    except ValueError as err:
        return _error(f"--device: {err}")
    try:
        return _run(args, device, info.is_main)
    finally:
        cleanup(info)


def _run(args: argparse.Namespace, device: torch.device, main_rank: bool) -> int:
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
        "draws",
    )
    for flag in flags:
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            return _error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.protocol and args.attacks is not None:
        return _error("--protocol sets the attacks; drop --attacks (or drop --protocol)")
    if args.attacks is None:
        args.attacks = [] if args.protocol else _attack_names(DEFAULT_ATTACKS)
    unknown = [n for n in (*args.attacks, *(args.sweep_attacks or ())) if n not in ATTACK_NAMES]
    if unknown:
        return _error(f"unknown attack(s) {unknown}; choose from {', '.join(ATTACK_NAMES)}")
    try:
        args.checkpoint, note = resolve_checkpoint(args.checkpoint)
    except FileNotFoundError as err:
        return _error(str(err))
    if note and main_rank:
        print(f"fastnoise eval: {note}")
    if "transfer" in args.attacks and not args.source_checkpoint:
        return _error("the transfer attack needs --source-checkpoint (the surrogate model)")
    checkpoint = _read_checkpoint(args.checkpoint)  # a bad file fails here, in one line
    dataset = args.dataset or checkpoint.get("dataset")
    if not dataset:
        return _error("--dataset is required (the checkpoint does not name its dataset)")

    model = load_model(args.checkpoint, device)
    source = load_model(args.source_checkpoint, device) if args.source_checkpoint else None
    test_set = load_dataset(dataset, root=args.root, train=False, download=args.download)
    x, y = as_tensors(test_set, limit=args.limit)
    loader = (x.to(device), y.to(device))  # a pair: sharded up front under torchrun
    protocol = get_protocol(args.protocol) if args.protocol else None
    if args.eps is None:
        try:
            args.eps = [protocol.eps_for(dataset)] if protocol else parse_eps("8/255")
        except ValueError as err:
            return _error(str(err))
    eps = args.eps[0]
    if protocol and len(args.eps) > 1:
        return _error("--protocol evaluates at one budget; give --eps one value (or none)")
    build_attack = _attack_builder(args, model, source)
    try:
        attacks = [] if protocol else [build_attack(n, eps) for n in args.attacks]
    except (TypeError, ValueError) as err:
        return _error(f"--attacks: {err}")

    progress = not args.no_progress
    out = args.out or os.path.splitext(args.checkpoint)[0] + "-eval"
    if args.autoattack:
        return _run_autoattack(args, model, loader, eps, dataset, out, progress, main_rank)
    try:
        report = evaluate(
            model,
            loader,
            attacks,
            repeats=args.repeats,
            progress=progress,
            checks=not args.no_checks,
            check_samples=args.check_samples,
            seed=args.seed,
            draws=args.draws,
            batch_size=args.batch_size,
            protocol=args.protocol,
            eps=eps if protocol else None,
            **_resumable(args, out, EVAL_STATE),
        )
    except KeyboardInterrupt:
        return _interrupted(out)
    if protocol:
        args.attacks = [a.name for a in report.attacks]
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
                batch_size=args.batch_size,
            )
            report.add_sweep(sweep)

    report.meta.update(
        checkpoint=os.path.abspath(args.checkpoint),
        model_config=checkpoint.get("model_config"),
        dataset=dataset,
        attacks=list(args.attacks),
        eps=list(args.eps),
        protocol=protocol.name if protocol else None,
        protocol_source=protocol.source if protocol else None,
    )
    if not main_rank:
        return 0
    paths = report.save(out)
    print(report.to_markdown())
    print("Report written to " + ", ".join(paths.values()))
    failed = [c.name for c in report.checks if c.status == "fail"]
    if failed:
        print(f"Self-checks failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if (failed and args.strict) else 0
