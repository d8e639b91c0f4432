"""``fastnoise certify``: certify a checkpoint's smoothed classifier on test images.

Example::

    fastnoise certify --checkpoint runs/gauss/last.pt --sigma 0.25 --n 100000 --limit 500

Writes ``certify.md``, ``certify.json``, ``certify.tsv`` (locuslab/smoothing's columns)
and ``certified_accuracy.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch

from fastnoise import rng
from fastnoise.cli_errors import CLIError

__all__ = ["add_arguments", "run"]

AMP_CHOICES = ("off", "bf16", "fp16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastnoise.eval.cli import add_data_arguments

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Certify test images with randomized smoothing (Cohen et al. 2019): for each image,\n"
        "the smoothed classifier's class and an L2 radius (pixels in [0, 1]) within which it\n"
        "provably does not change, with probability 1 - alpha. Writes certify.md, .json,\n"
        ".tsv and certified_accuracy.png."
    )
    parser.epilog = (
        "example:\n  fastnoise certify --checkpoint runs/gauss/last.pt --sigma 0.25 "
        "--n 100000 --limit 500"
    )
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (.pt) to certify")
    parser.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="noise std in pixel units; use the sigma the model was trained with (default: "
        "the checkpoint's --sigma when it was trained with --method gaussian)",
    )
    parser.add_argument(
        "--n", type=int, default=100_000, help="samples that estimate p_A (default: 100000)"
    )
    parser.add_argument(
        "--n0", type=int, default=100, help="samples that pick the class (default: 100)"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.001,
        help="failure probability of each certificate (default: 0.001)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="noisy samples per forward pass; images share a pass when n fits (default: 1000)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="certify the first N images (default: all)"
    )
    parser.add_argument(
        "--skip",
        type=int,
        default=1,
        help="certify every K-th test image (Cohen et al.: 20 on CIFAR-10) (default: 1)",
    )
    add_data_arguments(parser, "test set")
    parser.add_argument(
        "--radius-step",
        type=float,
        default=0.25,
        help="spacing of the radii in the certified-accuracy table (default: 0.25)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the base classifier")
    parser.add_argument(
        "--amp",
        choices=AMP_CHOICES,
        default="off",
        help="autocast the base classifier: bf16 (CPU or GPU) or fp16 (GPU) (default: off)",
    )
    parser.add_argument(
        "--device", default=None, help="cuda, cuda:N or cpu (default: cuda if there is one)"
    )
    parser.add_argument(
        "--out", default=None, help="report folder (default: the checkpoint's path + '-certify')"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _sigma(args: argparse.Namespace, checkpoint: dict[str, Any]) -> float:
    if args.sigma is not None:
        return args.sigma
    config = checkpoint.get("config") or {}
    if checkpoint.get("method") == "gaussian" and "sigma" in config:
        return float(config["sigma"])
    raise CLIError(
        "--sigma is required: the checkpoint was not trained with --method gaussian, so it "
        "does not say which noise it expects"
    )


def _check_args(args: argparse.Namespace) -> None:
    from fastnoise.certify.smooth import check_certify_arguments

    for flag in ("limit", "skip"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise CLIError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if not args.radius_step > 0:
        raise CLIError(f"--radius-step must be > 0, got {args.radius_step}")
    try:
        check_certify_arguments(args.n0, args.n, args.alpha, args.batch_size)
    except ValueError as error:
        raise CLIError(f"--{str(error).replace('batch_size', 'batch-size')}") from None


def run(args: argparse.Namespace) -> int:
    from fastnoise.certify.smooth import Smooth, check_sigma
    from fastnoise.data import as_tensors, load_dataset
    from fastnoise.eval.cli import _read_checkpoint, load_model

    _check_args(args)
    if not os.path.isfile(args.checkpoint):
        raise CLIError(f"--checkpoint {args.checkpoint!r} is not a file")
    checkpoint = _read_checkpoint(args.checkpoint)
    sigma = _sigma(args, checkpoint)
    try:
        check_sigma(sigma)
    except ValueError as error:
        raise CLIError(f"--{error}") from None
    dataset = args.dataset or checkpoint.get("dataset")
    if not dataset:
        raise CLIError("--dataset is required (the checkpoint does not name its data set)")
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as error:
        raise CLIError(f"--device: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {args.device}: no CUDA device here; use --device cpu")
    model = load_model(args.checkpoint, device)
    num_classes = int(checkpoint["model_config"]["num_classes"])
    test_set = load_dataset(dataset, root=args.root, train=False, download=args.download)
    images, labels = as_tensors(test_set)
    picked = torch.arange(0, len(images), args.skip)[: args.limit]
    images, labels = images[picked].to(device), labels[picked]

    amp = None if args.amp == "off" else args.amp
    smooth = Smooth(model, num_classes, sigma, compile=args.compile, amp=amp)
    report = _certify_all(smooth, images, labels, picked, args)
    report.meta.update(
        checkpoint=os.path.abspath(args.checkpoint),
        dataset=dataset,
        skip=args.skip,
        batch_size=args.batch_size,
        seed=args.seed,
        device=str(device),
        compile=args.compile,
        amp=args.amp,
    )
    out = args.out or os.path.splitext(args.checkpoint)[0] + "-certify"
    paths = report.save(out)
    print(report.summary_markdown())
    print("Report written to " + ", ".join(paths.values()))
    return 0


def _certify_all(smooth, images, labels, picked, args):
    """CERTIFY on groups of images that share forward passes (as many as one batch holds
    at n samples each); an image's time is its share of its group's wall time. Each
    group's noise seed is drawn from a generator seeded with --seed: a run is reproducible
    from --seed (and --batch-size, which sets the groups), and runs with different seeds
    share no draws (seed + k would: --seed 0's group 1 was --seed 1's group 0)."""
    from tqdm.auto import tqdm

    from fastnoise.certify.report import CertifiedImage, CertifyReport

    group = max(1, args.batch_size // args.n)
    group_seeds = torch.Generator().manual_seed(args.seed)
    rows: list[CertifiedImage] = []
    total = 0.0
    with tqdm(total=len(images), desc="certify", unit="image", disable=args.no_progress) as bar:
        for first in range(0, len(images), group):
            start = time.perf_counter()
            predictions, radii = smooth.certify(
                images[first : first + group], args.n0, args.n, args.alpha, args.batch_size,
                seed=rng.draw_seed(generator=group_seeds),
            )  # fmt: skip
            seconds = time.perf_counter() - start  # certify waited for the device already
            total += seconds
            for j, (predict, radius) in enumerate(
                zip(predictions.tolist(), radii.tolist(), strict=True)
            ):
                label = int(labels[first + j])
                rows.append(
                    CertifiedImage(
                        index=int(picked[first + j]),
                        label=label,
                        predict=predict,
                        radius=radius,
                        correct=predict == label,
                        time_s=seconds / len(predictions),
                    )
                )
            bar.update(len(predictions))
            bar.set_postfix(certified=f"{sum(r.correct for r in rows)}/{len(rows)}")
    return CertifyReport(rows, smooth.sigma, args.n0, args.n, args.alpha, args.radius_step, total)
