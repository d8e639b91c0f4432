"""``fastnoise train``: every TrainConfig field is a flag (``--lr 0.05``, ``--no-plots``),
applied on top of ``--preset``. Under torchrun the run is data-parallel."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import typing
from pathlib import Path
from typing import Any

from fastnoise.cli_errors import CLIError
from fastnoise.cli_values import parse_fraction
from fastnoise.train.cli_help import FIELD_GROUPS, FIELD_HELP, PIXEL_FIELDS, format_default
from fastnoise.train.config import (
    AMP_MODES,
    ATTACK_BN_MODES,
    LR_SCHEDULES,
    METHODS,
    OPTIMIZERS,
    PRESETS,
    THETA_UPDATES,
    TrainConfig,
)

__all__ = ["add_arguments", "config_from_args", "interrupted_message", "resume_command", "run"]

DESCRIPTION = """\
Train a model with a noise-injection defense or adversarial training. Start from
a paper's setup with --preset, then change any value with its flag. Every epoch
writes OUT/last.pt; a used --out needs --resume (continue) or --overwrite (start
over). Pixels are in [0, 1]: budgets such as --eps are in those units (8/255).
"""
EPILOG = """examples:
  fastnoise train --dataset embedded --method nfgsm --pnil --epochs 3 --out runs/quick
  fastnoise train --preset pnil-mnist --data-root ../shared/data --out runs/pnil
  fastnoise train --preset pnil-mnist --out runs/pnil --resume --epochs 40
  fastnoise train --preset pnil-mnist --help     (shows that preset's values as defaults)"""


def _none_or(kind):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _dataset_name(text: str) -> str:
    """Aliases (fashion_mnist, CIFAR-10) to the canonical name; unknown names pass through
    to argparse's choices check, which lists the valid ones."""
    from fastnoise.data import dataset_info

    try:
        return dataset_info(text).name
    except ValueError:
        return text


def _choices(name: str) -> list[str] | None:
    if name == "dataset":
        from fastnoise.data import DATASETS

        return list(DATASETS)
    if name == "model":
        from fastnoise.models import MODEL_NAMES

        return list(MODEL_NAMES)
    fixed = {
        "method": METHODS,
        "optimizer": OPTIMIZERS,
        "lr_schedule": LR_SCHEDULES,
        "amp": AMP_MODES,
        "theta_update": THETA_UPDATES,
        "attack_bn": ATTACK_BN_MODES,
    }
    return list(fixed[name]) if name in fixed else None


def _help(field: str, default: Any, preset: str | None = None) -> str:
    source = f"preset {preset}" if preset else "default"
    return f"{FIELD_HELP[field]} ({source}: {format_default(default, field)})"


class _PresetAction(argparse.Action):
    """Stores the preset and rewrites the help's defaults to its values, so that
    ``--preset X --help`` shows what X trains with."""

    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, value)
        preset = TrainConfig.from_preset(value).to_dict()
        for action in parser._actions:
            if action.dest in FIELD_HELP:
                action.help = _help(action.dest, preset[action.dest], value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description, parser.epilog = DESCRIPTION, EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the examples' lines
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        metavar="NAME",
        action=_PresetAction,
        help="start from a paper's setup, then apply the other flags: "
        + ", ".join(sorted(PRESETS)),
    )
    parser.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    hints = typing.get_type_hints(TrainConfig)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for title, group_fields in FIELD_GROUPS.items():
        group = parser.add_argument_group(title)
        for name in group_fields:
            _add_field(group, fields[name], hints[name])


def _add_field(group, f: dataclasses.Field, hint: Any) -> None:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    # default None: config_from_args can tell a flag given from one left to the preset
    kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": _help(f.name, default)}
    if hint is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif f.name == "model_kwargs":
        kwargs.update(type=json.loads, metavar="JSON")
    elif f.name == "milestones":
        kwargs.update(nargs="*", type=int, metavar="EPOCH")
    elif f.name == "adam_betas":
        kwargs.update(nargs=2, type=float, metavar=("BETA1", "BETA2"))
    elif f.name in PIXEL_FIELDS:
        kwargs.update(type=parse_fraction, metavar="VALUE")
    else:
        base = next((t for t in (int, float, str) if t in typing.get_args(hint)), hint)
        optional = type(None) in typing.get_args(hint)
        kwargs["type"] = _none_or(base) if optional else base
        if f.name == "dataset":
            kwargs["type"] = _dataset_name
        kwargs["choices"] = _choices(f.name)
    # --root too, so train and eval take the dataset folder by the same names
    aliases = ("--root",) if f.name == "data_root" else ()
    group.add_argument("--" + f.name.replace("_", "-"), *aliases, **kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    try:
        if getattr(args, "preset", None):
            return TrainConfig.from_preset(args.preset, **overrides)
        return TrainConfig.from_dict(overrides)
    except ValueError as error:  # the config names fields; the command line knows flags
        raise CLIError(_fields_as_flags(str(error), names)) from error


def _fields_as_flags(message: str, names: set[str]) -> str:
    pattern = r"\b(" + "|".join(sorted(names, key=len, reverse=True)) + r")\b"
    return re.sub(pattern, lambda m: "--" + m.group(1).replace("_", "-"), message)


def resume_command(argv: list[str]) -> str:
    """The command line that continues this run: the same flags, plus --resume, minus
    --overwrite (which would delete the checkpoint)."""
    kept = [a for a in argv if a not in ("--overwrite", "--no-overwrite", "--no-resume")]
    if "--resume" not in kept:
        kept.append("--resume")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    head = ["fastnoise", "train"]
    if world_size > 1:  # started by torchrun: resume the same way
        head = ["torchrun", f"--nproc-per-node={world_size}", "-m", "fastnoise", "train"]
    return shlex.join(head + kept)


def interrupted_message(args: argparse.Namespace) -> str:
    """One line for Ctrl-C: where the last checkpoint is and how to continue from it."""
    if int(os.environ.get("RANK", "0")) != 0:
        return ""
    from fastnoise.train.checkpoint import load_checkpoint
    from fastnoise.train.run_folder import LAST

    out = getattr(args, "out", None) or TrainConfig().out  # no preset sets out
    last = Path(out) / LAST
    try:
        epoch = load_checkpoint(last)["epoch"]
    except (OSError, ValueError, RuntimeError):
        return "interrupted before the first checkpoint was written; nothing to resume"
    return (
        f"interrupted; last checkpoint {last} (epoch {epoch}). "
        f"Resume with: {resume_command(getattr(args, 'command_line', []))}"
    )


def run(args: argparse.Namespace) -> int:
    if args.list_presets:
        for name, preset in sorted(PRESETS.items()):
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in preset.items()))
        return 0
    from fastnoise.train.trainer import fit

    config = config_from_args(args)
    result = fit(config)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    last = result.metrics[-1] if result.metrics else {}
    print(f"trained {config.method} on {config.dataset} for {last.get('epoch', 0)} epochs")
    if result.checkpoint is not None:
        print(f"checkpoint: {result.checkpoint}")
    if result.best_checkpoint is not None:
        print(
            f"best checkpoint (lowest adversarial validation loss, epoch {result.model_epoch}): "
            f"{result.best_checkpoint}; fastnoise eval --checkpoint {result.out_dir} uses it"
        )
    if result.stopped_early and result.metrics and result.metrics[-1].get("converged"):
        print(
            f"stopped early: no lower validation PGD loss for {config.patience} epochs "
            "(--patience); the model is the best epoch's"
        )
    elif result.stopped_early:
        print("stopped early: catastrophic overfitting (validation PGD accuracy collapsed)")
    print(f"metrics: {result.out_dir / 'metrics.jsonl'}")
    return 0
