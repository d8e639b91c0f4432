"""``fastnoise train``: every TrainConfig field is a flag (``--lr 0.05``, ``--no-plots``),
applied on top of ``--preset``. Under torchrun the run is data-parallel."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import typing
from typing import Any

from fastnoise.train.config import METHODS, PRESETS, TrainConfig

__all__ = ["add_arguments", "config_from_args", "run"]

_HELP = {
    "method": "training method",
    "out": "output folder (checkpoints, metrics.jsonl, plots)",
    "resume": "continue from OUT/last.pt if it exists",
    "amp": "autocast dtype on the GPU (bf16 or fp16), off by default",
    "model_kwargs": "extra kwargs for fastnoise.models.build, as JSON (e.g. '{\"width\": 2}')",
    "holdout": "training images held out for validation (best checkpoint, RFGSM stop)",
    "device": "auto, cpu, cuda or cuda:N",
}


def _none_or(kind):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), help="start from a paper setup, then apply flags"
    )
    parser.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{_HELP.get(f.name, f.name.replace('_', ' '))} (default: {default!r})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.name == "model_kwargs":
            kwargs["type"] = json.loads
        elif f.name in ("milestones", "adam_betas"):
            kwargs["nargs"] = "*" if f.name == "milestones" else 2
            kwargs["type"] = int if f.name == "milestones" else float
        elif f.name == "method":
            kwargs["choices"] = sorted(METHODS)
        else:
            base = next((t for t in (int, float, str) if t in typing.get_args(hint)), hint)
            optional = type(None) in typing.get_args(hint)
            kwargs["type"] = _none_or(base) if optional else base
        # --root too, so train and eval take the dataset folder by the same name
        aliases = ("--root",) if f.name == "data_root" else ()
        parser.add_argument(flag, *aliases, **kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if getattr(args, "preset", None):
        return TrainConfig.from_preset(args.preset, **overrides)
    return TrainConfig.from_dict(overrides)


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
        print(f"best checkpoint (lowest adversarial validation loss): {result.best_checkpoint}")
    if result.stopped_early:
        print("stopped early: catastrophic overfitting (validation PGD accuracy collapsed)")
    print(f"metrics: {result.out_dir / 'metrics.jsonl'}")
    return 0
