"""What each ``fastnoise train`` flag does, grouped as ``--help`` shows them.

Every TrainConfig field has an entry here (a test checks it), with its unit where it has one.
Pixel values are in [0, 1], so an L-inf budget of 8/255 is ``--eps 8/255``.
"""

from __future__ import annotations

import json
from typing import Any

from fastnoise.cli_values import format_fraction

__all__ = ["FIELD_GROUPS", "FIELD_HELP", "PIXEL_FIELDS", "format_default"]

FIELD_GROUPS: dict[str, dict[str, str]] = {
    "method and data": {
        "method": "training method: standard (no defense), pgd-at (PGD adversarial training), "
        "rfgsm (FGSM from a random start), gaussian (Gaussian noise augmentation for "
        "randomized smoothing, see --sigma), nfgsm (noisy FGSM, PNIL paper), pni (parametric "
        "noise injection), learn2perturb, learn2perturb-r (theta follows the regularizer only)",
        "dataset": "data set; embedded (MNIST) and embedded-fashion ship with fastnoise "
        "(5000 training images each) and need neither files nor internet",
        "data_root": "folder holding the data set in torchvision's layout (MNIST/raw, "
        "cifar-10-batches-py, ...); unset: $FASTNOISE_DATA_ROOT, else the default folder",
        "download": "download the data set into the data folder if it is missing (internet)",
        "train_limit": "train on the first N training images only (none: all)",
        "holdout": "training images held out for validation: they pick best.pt (lowest PGD "
        "validation loss) and drive the rfgsm overfitting stop",
        "augment": "random crop (4-pixel padding) and horizontal flip, as for CIFAR",
    },
    "model": {
        "model": "network architecture: small_cnn for MNIST-sized images, the resnets for CIFAR",
        "model_kwargs": "extra keyword arguments for the model, as JSON, e.g. '{\"width\": 2}'",
        "pnil": "start the model with a PNIL layer (learned input noise, PNIL paper)",
        "theta_init": "initial noise scale theta of the Learn2Perturb / PNI modules",
        "theta_min": "lower bound on theta, enforced after every step",
    },
    "optimisation": {
        "epochs": "passes over the training set; on --resume, the epoch to train up to",
        "batch_size": "images per step (per process under torchrun)",
        "max_steps_per_epoch": "end each epoch after N steps, for quick tests (none: no cap)",
        "optimizer": "optimizer of the weights (and of theta)",
        "lr": "learning rate of the weights (the peak of the cyclic and triangle schedules)",
        "momentum": "SGD momentum (share of the previous update kept)",
        "nesterov": "Nesterov momentum for SGD",
        "weight_decay": "L2 weight decay of the weights (theta has its own, see below)",
        "adam_betas": "Adam's beta1 and beta2",
        "lr_schedule": "constant; multistep (times --lr-gamma at each milestone); cyclic "
        "(--lr-min up to --lr and back, repeating); triangle (0 up to --lr at 2/5 of the "
        "epochs, then back to 0)",
        "milestones": "multistep: epochs at which the lr is multiplied by --lr-gamma",
        "lr_gamma": "multistep: factor applied to the lr at each milestone",
        "lr_min": "cyclic and triangle: lowest learning rate",
        "cycle_epochs": "cyclic: epochs from --lr-min up to --lr (half a cycle)",
    },
    "adversarial training": {
        "eps": "L-inf budget of the training attack, in pixel units (pixels are in [0, 1]); "
        "fractions such as 8/255 are accepted",
        "attack_steps": "PGD steps per training example (pgd-at, pni, learn2perturb)",
        "attack_step_size": "PGD step size, in pixel units (e.g. 2/255)",
        "clean_weight": "alpha in alpha * clean loss + (1 - alpha) * adversarial loss "
        "(pni, learn2perturb), between 0 and 1",
        "fgsm_step_ratio": "rfgsm: FGSM step as a multiple of --eps",
        "train_eot": "nfgsm: noise draws averaged per gradient (L in PNIL Algorithm 1)",
        "sigma": "gaussian: std of the Gaussian noise added to every training image, in pixel "
        "units (Cohen et al. 2019); certify with the same value (fastnoise certify --sigma)",
        "mixed_bn": "pni, learn2perturb: one forward over the clean and adversarial images "
        "together, so BatchNorm normalizes the mixed batch (off: two forwards, as the released "
        "PNI and Learn2Perturb code runs them)",
        "attack_bn": "BatchNorm while the training attack runs: train (batch statistics, "
        "running statistics updated at every attack step), frozen (running statistics, "
        "nothing updated) or reference (what the method's released code does: frozen for "
        "learn2perturb, learn2perturb-r and pni, train for the others)",
    },
    "noise parameters (learn2perturb, pni)": {
        "gamma": "weight of the Learn2Perturb regularizer on theta (Eq. 7)",
        "noise_off_epochs": "learn2perturb: first epochs trained with the noise off",
        "noise_lr": "learning rate of theta (none: the same as --lr)",
        "noise_weight_decay": "L2 weight decay of theta",
        "theta_update": "learn2perturb's theta step: algorithm1 (Algorithm 1: theta -= lr * "
        "grad L + gamma * grad g, a plain step at the W just updated, one more forward and "
        "backward per batch), joint (SGD with momentum on lr * (grad L + gamma * grad g) at "
        "the old W, what earlier fastnoise versions did) or released-code (the released "
        "code's order: a regularizer step, then W and theta stepped on grad L, both with "
        "momentum)",
    },
    "validation on the held-out images": {
        "val_pgd_steps": "PGD steps of the validation attack",
        "overfit_drop": "rfgsm: stop when validation PGD accuracy falls by this fraction (0-1) "
        "below its best",
        "patience": "stop once the validation PGD loss has not improved for N epochs, and "
        "keep the best epoch (PNIL Sec. 4.4: trained till convergence; none: run all epochs)",
    },
    "run": {
        "seed": "seed of the initialisation, the data order, the held-out split and the noise",
        "device": "auto (a GPU if there is one), cpu, cuda or cuda:N",
        "amp": "mixed precision: off, bf16 (GPU or CPU) or fp16 (GPU only)",
        "channels_last": "channels-last memory layout (faster convolutions on recent GPUs)",
        "compile": "torch.compile the model for training (slower first epoch)",
        "out": "output folder: last.pt (every epoch), best.pt, metrics.jsonl and plots",
        "resume": "continue the run in --out from its last.pt; the data set, model, method "
        "and --eps must match, a new --lr or --epochs is applied and reported",
        "overwrite": "replace a run already in --out (deletes its checkpoints, metrics and "
        "plots) instead of refusing",
        "plots": "draw the theta-evolution and PNIL variance plots into --out",
        "progress": "progress bars; one summary line per epoch is printed either way",
    },
}

FIELD_HELP: dict[str, str] = {k: v for group in FIELD_GROUPS.values() for k, v in group.items()}


PIXEL_FIELDS = ("eps", "attack_step_size")  # shown as k/255 where they are


def format_default(value: Any, field: str = "") -> str:
    """A default as a user would type it: 8/255, on/off, none, 150 250, JSON."""
    if field in PIXEL_FIELDS:
        return format_fraction(value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return " ".join(format_default(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return json.dumps(value) if value else "{}"
    return str(value)
