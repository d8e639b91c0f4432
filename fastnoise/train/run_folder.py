"""The output folder of a run: refuse to clobber one by accident, and check a resume.

A folder that already holds a run is only reused on request: ``resume`` continues it,
``overwrite`` replaces it. A resume must continue the *same* experiment, so a checkpoint
whose data, model, method or threat model differ from the request is refused by name;
optimisation settings (lr, epochs, schedule, ...) may change and are reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fastnoise.train.config import TrainConfig

__all__ = [
    "IDENTITY_FIELDS",
    "RUNTIME_FIELDS",
    "ConfigChange",
    "OutputFolderInUseError",
    "ResumeMismatchError",
    "claim_output_folder",
    "config_changes",
    "read_resume_point",
]

LAST, BEST, METRICS = "last.pt", "best.pt", "metrics.jsonl"
RUN_FILES = (LAST, BEST, METRICS)
PLOT_FILES = ("theta_evolution.png", "pnil_variance.png")

# What is trained: changing one of these on resume would silently continue another
# experiment (other data or split, model, method, threat model, optimizer state layout).
IDENTITY_FIELDS = (
    "method", "dataset", "train_limit", "holdout", "seed", "model", "model_kwargs", "pnil",
    "theta_init", "theta_min", "eps", "optimizer",
)  # fmt: skip
# Identity only where the method uses it: gaussian trains on inputs noised with sigma, and
# a model trained at one sigma is certified at that sigma (Cohen et al. 2019).
IDENTITY_FOR_METHOD = {"gaussian": ("sigma",)}
# Where and how the run executes: no effect on the numbers, so not worth a mention.
RUNTIME_FIELDS = (
    "data_root", "download", "device", "compile", "out", "resume", "overwrite", "plots",
    "progress",
)  # fmt: skip
# Every other field (epochs, lr, schedule, attack steps, ...) may change on resume: the new
# value applies from the resumed epoch on, is printed, and is recorded in the checkpoint.

# Fields added after checkpoints were written, with what the code did before them and the
# methods that behave differently now: resuming such a run reports the switch to today's
# default instead of making it silently.
_BEFORE_THE_FIELD = {
    "theta_update": ("joint", ("learn2perturb", "learn2perturb-r")),
    "mixed_bn": (True, ("pni", "learn2perturb", "learn2perturb-r")),
    "attack_bn": ("train", ("pni", "learn2perturb", "learn2perturb-r", "pgd-at", "rfgsm", "nfgsm")),
}


class OutputFolderInUseError(FileExistsError):
    """``out`` already holds a run and neither ``resume`` nor ``overwrite`` was asked for."""

    def __init__(self, out_dir: Path, found: list[str], epoch: int | None):
        self.out_dir, self.found, self.epoch = out_dir, found, epoch
        super().__init__(
            f"{str(out_dir)!r} already holds a training run ({describe_run(found, epoch)}); "
            "pass resume=True to continue it or overwrite=True to replace it"
        )


@dataclass(frozen=True)
class ConfigChange:
    field: str
    saved: Any
    requested: Any


class ResumeMismatchError(ValueError):
    """The checkpoint to resume was trained on another data set, model, method or eps."""

    def __init__(self, checkpoint: Path, mismatches: list[ConfigChange]):
        self.checkpoint, self.mismatches = checkpoint, mismatches
        differences = "; ".join(
            f"{m.field} is {m.saved!r} in the checkpoint, {m.requested!r} requested"
            for m in mismatches
        )
        super().__init__(
            f"cannot resume {str(checkpoint)!r}: {differences}. Resume with the same "
            "settings, or start over with overwrite=True or in another out folder"
        )


def describe_run(found: list[str], epoch: int | None) -> str:
    if epoch is not None:
        return f"{LAST} after epoch {epoch}"
    return ", ".join(found)


def claim_output_folder(config: TrainConfig, out_dir: Path, is_main: bool) -> None:
    """Raise if ``out_dir`` holds a run that this one would clobber; with ``overwrite``,
    delete the old run's files (only those: the folder may hold the user's own)."""
    found = [name for name in RUN_FILES if (out_dir / name).is_file()]
    if not found or config.resume:
        return
    if not config.overwrite:
        raise OutputFolderInUseError(out_dir, found, _saved_epoch(out_dir / LAST))
    if is_main:
        for name in (*RUN_FILES, *PLOT_FILES):
            (out_dir / name).unlink(missing_ok=True)


def _saved_epoch(path: Path) -> int | None:
    if not path.is_file():
        return None
    from fastnoise.train.checkpoint import load_checkpoint

    try:
        return int(load_checkpoint(path)["epoch"])
    except Exception:  # unreadable: the refusal still stands, just without the epoch
        return None


def read_resume_point(
    config: TrainConfig, last_path: Path, say: Callable[[str], object]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The checkpoint to continue (None: start afresh) after checking that it continues
    the same experiment, and the history of settings changed by this and earlier resumes.
    ``say`` reports where the run resumes and what changed."""
    if not config.resume:
        return None, []
    if not last_path.is_file():
        say(f"nothing to resume in {last_path.parent}: starting a new run")
        return None, []
    from fastnoise.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(last_path, map_location="cpu")
    changes = config_changes(ckpt.get("config", {}), config, last_path)
    done = ckpt["epoch"]
    say(f"resuming {last_path} after epoch {done} (training to epoch {config.epochs})")
    for ch in changes:
        say(
            f"  {ch.field} changed since the checkpoint: {ch.saved!r} -> {ch.requested!r} "
            f"(applies from epoch {done + 1})"
        )
    if done >= config.epochs:
        say(f"  all {config.epochs} epochs are done; raise epochs to train further")
    history = list(ckpt.get("config_changes") or [])
    history += [
        {"epoch": done, "field": ch.field, "old": ch.saved, "new": ch.requested} for ch in changes
    ]
    return ckpt, history


def config_changes(saved: dict[str, Any], config: TrainConfig, checkpoint: Path):
    """The tunable fields that differ between ``saved`` (a checkpoint's config) and
    ``config``; raise :class:`ResumeMismatchError` if an identity field differs."""
    requested = config.to_dict()
    saved = {**_behaviour_before_new_fields(saved, config), **saved}
    identity = IDENTITY_FIELDS + IDENTITY_FOR_METHOD.get(config.method, ())
    mismatches, changes = [], []
    for f in fields(TrainConfig):
        if f.name in RUNTIME_FIELDS or f.name not in saved:  # older checkpoints lack new fields
            continue
        old, new = saved[f.name], requested[f.name]
        if _same(f.name, old, new):
            continue
        change = ConfigChange(f.name, old, new)
        (mismatches if f.name in identity else changes).append(change)
    if mismatches:
        raise ResumeMismatchError(checkpoint, mismatches)
    return changes


def _behaviour_before_new_fields(saved: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """What an older checkpoint's run did for the fields it lacks, where it matters."""
    before = {}
    for name, (value, methods) in _BEFORE_THE_FIELD.items():
        if name not in saved and config.method in methods:
            before[name] = value
    if before.get("attack_bn") == config.attack_bn_mode:
        del before["attack_bn"]  # "reference" resolves to what the old code did
    return before


def _same(name: str, old: Any, new: Any) -> bool:
    if name == "dataset":
        from fastnoise.data import dataset_info

        return dataset_info(old).name == dataset_info(new).name  # "fashion_mnist" is an alias
    if isinstance(old, float) or isinstance(new, float):
        if old is None or new is None:
            return old is new
        return math.isclose(float(old), float(new), rel_tol=1e-12, abs_tol=0.0)
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return list(old) == list(new)
    return old == new
