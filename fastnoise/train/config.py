"""Training configuration: one dataclass, and presets with the papers' numbers.

Every field can be overridden: in Python with ``TrainConfig.from_preset(name, **kw)`` or
``dataclasses.replace``, on the command line with ``--field value``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

__all__ = ["METHODS", "PRESETS", "TrainConfig"]

# method -> the noise modules its model needs ("l2p", "pni" or None)
METHODS: dict[str, str | None] = {
    "standard": None,
    "pgd-at": None,
    "rfgsm": None,
    "nfgsm": None,
    "pni": "pni",
    "learn2perturb": "l2p",
    "learn2perturb-r": "l2p",
    "gaussian": None,
}
LR_SCHEDULES = ("constant", "multistep", "cyclic", "triangle")
OPTIMIZERS = ("sgd", "adam")
AMP_MODES = ("off", "bf16", "fp16")
# Learn2Perturb's theta step: Algorithm 1 as printed, our pre-issue-13 joint step, or the
# released code's order (see Learn2Perturb in methods.py)
THETA_UPDATES = ("algorithm1", "joint", "released-code")
# BatchNorm while training attacks run: "reference" picks the method's released code's mode
ATTACK_BN_MODES = ("reference", "train", "frozen")
# The released Learn2Perturb and PNI code put the model in eval mode for PGD
# (Learn2Perturb attacks/pgd.py; PNI attack_model.py); Wong et al.'s FGSM/PGD training code
# keeps it in train mode. Methods not listed run their attacks in train mode.
REFERENCE_ATTACK_BN = {"pni": "frozen", "learn2perturb": "frozen", "learn2perturb-r": "frozen"}


@dataclass
class TrainConfig:
    """Everything one training run needs. Defaults: a quick MNIST small-CNN run."""

    method: str = "standard"
    # data
    dataset: str = "mnist"
    data_root: str | None = None
    download: bool = False  # fetch the data set into data_root if it is missing
    train_limit: int | None = None  # use only the first N training images
    holdout: int = 0  # images held out of training for validation / early stopping
    augment: bool = False  # random crop (pad 4) + horizontal flip, CIFAR style
    # model: fastnoise.models.build(model, **model_kwargs); noise/pnil/shape are filled in
    model: str = "small_cnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    pnil: bool = False  # PNIL (PNIL paper Eq. 2-3) as the first layer
    # optimisation
    epochs: int = 10
    batch_size: int = 128
    max_steps_per_epoch: int | None = None  # cap batches per epoch (smoke tests, demo)
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "multistep"
    milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    lr_min: float = 0.0  # cyclic / triangle lower bound
    cycle_epochs: float = 2.0  # cyclic: epochs from lr_min up to lr (half a cycle)
    # adversarial training
    eps: float = 8 / 255
    attack_steps: int = 7
    attack_step_size: float = 0.01
    clean_weight: float = 0.5  # Learn2Perturb Eq. (11) alpha; beta = 1 - alpha
    fgsm_step_ratio: float = 1.25  # rfgsm: FGSM step = ratio * eps (Wong et al. 2020)
    train_eot: int = 1  # nfgsm: Monte Carlo samples L in PNIL Algorithm 1
    sigma: float = 0.25  # gaussian: std of the input noise, pixel units (Cohen et al. 2019)
    mixed_bn: bool = False  # one forward over cat([clean, adversarial]) instead of two
    attack_bn: str = "reference"  # BatchNorm during training attacks: train, frozen
    # noise parameters (Learn2Perturb, PNI)
    theta_init: float = 0.25
    theta_min: float = 0.01
    gamma: float = 1e-4  # Learn2Perturb Eq. (7)
    noise_off_epochs: int = 20  # Learn2Perturb only: noise disabled for the first epochs
    noise_lr: float | None = None  # None: same lr as the weights (Algorithm 1)
    noise_weight_decay: float = 0.0
    theta_update: str = "algorithm1"  # Learn2Perturb: see THETA_UPDATES
    # validation on the held-out images (PNIL: keep lowest adversarial val loss; RFGSM:
    # catastrophic-overfitting stop)
    val_pgd_steps: int = 10
    overfit_drop: float = 0.2  # rfgsm: stop when val PGD accuracy drops by this much
    patience: int | None = None  # stop after N epochs without a lower val PGD loss
    # runtime
    seed: int = 0
    device: str = "auto"
    amp: str = "off"
    channels_last: bool = False
    compile: bool = False
    out: str = "runs/train"
    resume: bool = False  # continue from out/last.pt (same data, model, method and eps)
    overwrite: bool = False  # replace a run already in out instead of refusing
    plots: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field when a value makes no sense."""
        choices = {
            "method": METHODS,
            "lr_schedule": LR_SCHEDULES,
            "optimizer": OPTIMIZERS,
            "amp": AMP_MODES,
            "theta_update": THETA_UPDATES,
            "attack_bn": ATTACK_BN_MODES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {sorted(allowed)}, got {getattr(self, name)!r}"
                )
        for name in ("epochs", "batch_size", "attack_steps", "train_eot", "val_pgd_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "eps", "gamma", "theta_min", "weight_decay", "attack_step_size"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not float(self.sigma) > 0:  # also refuses NaN
            raise ValueError(f"sigma must be > 0 (pixel units), got {self.sigma}")
        if not 0.0 <= self.clean_weight <= 1.0:
            raise ValueError(f"clean_weight must be in [0, 1], got {self.clean_weight}")
        if self.theta_init < self.theta_min:
            raise ValueError(
                f"theta_init ({self.theta_init}) must be >= theta_min ({self.theta_min})"
            )
        if self.noise_off_epochs < 0 or self.holdout < 0:
            raise ValueError("noise_off_epochs and holdout must be >= 0")
        if self.patience is not None:
            if int(self.patience) < 1:
                raise ValueError(f"patience must be >= 1 (epochs), got {self.patience}")
            if self.holdout == 0:
                raise ValueError(
                    "patience needs holdout > 0: it watches the adversarial validation loss "
                    "on the held-out images"
                )
            cycle = 2 * self.cycle_epochs  # the cyclic lr's period: up, then down
            if self.lr_schedule == "cyclic" and self.patience < cycle:
                # The validation loss dips at each low-lr point: a shorter patience ends
                # the run before the next dip can beat the last one (seen in RESULTS.md).
                warnings.warn(
                    f"patience ({self.patience} epochs) is shorter than the cyclic lr's "
                    f"period ({cycle:g} epochs): training stops before the next low-lr "
                    f"epoch can improve on the last; use patience >= {math.ceil(cycle) + 1}",
                    stacklevel=3,
                )
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: continue or replace")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones}")

    @property
    def noise_kind(self) -> str | None:
        return METHODS[self.method]

    @property
    def attack_bn_mode(self) -> str:
        """``attack_bn`` with "reference" resolved to the method's released code's mode."""
        if self.attack_bn != "reference":
            return self.attack_bn
        return REFERENCE_ATTACK_BN.get(self.method, "train")

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only, so it can sit in a weights_only checkpoint."""
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        d = dict(d)
        if "milestones" in d:
            d["milestones"] = tuple(d["milestones"])
        if "adam_betas" in d:
            d["adam_betas"] = tuple(d["adam_betas"])
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TrainConfig:
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        return cls.from_dict({**PRESETS[name], **overrides})


# Learn2Perturb supplement A.4: SGD Nesterov 0.9, wd 1e-4 on W and 0 on theta, batch 128,
# 350 epochs, lr 0.1 -> 0.01 (epoch 150) -> 0.001 (epoch 250), gamma 1e-4; Sec. 4: PGD-7
# adversarial training, eps 8/255, step 0.01, Eq. (11) with alpha = beta = 0.5; Sec. 3.3:
# noise off for the first 20 epochs. Not in the paper: theta_init = 0.25 and
# theta_min = 0.01 come from the released code (sigma maps of ones * 0.25, clamp at 0.01).
_L2P_CIFAR10 = dict(
    method="learn2perturb",
    dataset="cifar10",
    augment=True,
    epochs=350,
    batch_size=128,
    optimizer="sgd",
    lr=0.1,
    momentum=0.9,
    nesterov=True,
    weight_decay=1e-4,
    noise_weight_decay=0.0,
    lr_schedule="multistep",
    milestones=(150, 250),
    lr_gamma=0.1,
    eps=8 / 255,
    attack_steps=7,
    attack_step_size=0.01,
    clean_weight=0.5,
    gamma=1e-4,
    theta_init=0.25,
    theta_min=0.01,
    noise_off_epochs=20,
)
# PNI (He et al. 2019), "the same parameters reported by the authors" (L2P A.4), from their
# released train_cifar.sh: 160 epochs, lr 0.1 -> /10 at 80 and 120, SGD Nesterov 0.9, weight
# decay 3e-4 but none on alpha, PNI-W (noise on weights, their default); PGD-7 (eps 8/255,
# step 0.01) with the 0.5/0.5 loss. Not reproduced: their 5-epoch delay of adversarial
# training and attacking the predicted instead of the true label.
_PNI_CIFAR10 = dict(
    _L2P_CIFAR10,
    method="pni",
    epochs=160,
    milestones=(80, 120),
    weight_decay=3e-4,
    noise_weight_decay=0.0,
    model_kwargs={"noise": "pni-w"},
)
# PNIL paper Sec. 4.3-4.4: Adam (0.9, 0.999) with a cyclic lr, batch 100, NFGSM at
# eps 8/255 (MNIST), 4/255 (Fashion-MNIST), 0.03 (CIFAR-10); best checkpoint by adversarial
# validation loss. The paper gives neither the lr bounds (found by a range test) nor the
# epoch count ("till convergence"): 1e-4..2e-3, 2-epoch half cycles and 30 epochs are ours.
_NFGSM_SMALL = dict(
    method="nfgsm",
    model="small_cnn",
    batch_size=100,
    optimizer="adam",
    lr=2e-3,
    lr_min=1e-4,
    weight_decay=0.0,
    lr_schedule="cyclic",
    cycle_epochs=2.0,
    epochs=30,
    holdout=1000,
    val_pgd_steps=10,
)

# Learn2Perturb Table 1, "Vanilla [24]" columns: Madry's PGD training, Eq. (10) (adversarial
# loss only), with the same optimizer setup as Learn2Perturb (A.4) and the same PGD-7.
_NOISE_ONLY = ("clean_weight", "gamma", "theta_init", "theta_min", "noise_off_epochs",
               "noise_weight_decay")  # fmt: skip
_PGD_AT_CIFAR10 = {k: v for k, v in _L2P_CIFAR10.items() if k not in _NOISE_ONLY}
_PGD_AT_CIFAR10["method"] = "pgd-at"
# PNIL paper Table 1, "RFGSM Training" columns: as NFGSM (Sec. 4.4) but FGSM from a random
# start with a 1.2 * eps step (Sec. 4.3, "as recommended by the authors"). The lr bounds
# and epoch count are ours, as for NFGSM; the catastrophic-overfitting stop (Wong et al.)
# stays on (overfit_drop 0.2): the paper names it, but not its threshold.
_RFGSM_SMALL = dict(_NFGSM_SMALL, method="rfgsm", fgsm_step_ratio=1.2)

# Cohen et al. 2019, Gaussian data augmentation: locuslab/smoothing train.py's defaults
# (90 epochs, batch 256, SGD lr 0.1 momentum 0.9, wd 1e-4, lr / 10 every 30 epochs), CIFAR
# crop and flip, sigma 0.25 (they also train 0.12, 0.5, 1.0). Their CIFAR-10 model is
# ResNet-110; resnet56 is the deepest here. The MNIST and Fashion-MNIST presets (not in the
# paper) keep the optimizer with 30 epochs, lr / 10 at 10 and 20.
_GAUSSIAN = dict(
    method="gaussian",
    sigma=0.25,
    epochs=90,
    batch_size=256,
    optimizer="sgd",
    lr=0.1,
    momentum=0.9,
    nesterov=False,
    weight_decay=1e-4,
    lr_schedule="multistep",
    milestones=(30, 60),
    lr_gamma=0.1,
)
_GAUSSIAN_SMALL = dict(_GAUSSIAN, model="small_cnn", epochs=30, milestones=(10, 20))

PRESETS: dict[str, dict[str, Any]] = {
    # Learn2Perturb Table 1 and Table 2, "Learn2Perturb" columns, one preset per row
    "l2p-cifar10-resnet20": dict(_L2P_CIFAR10, model="resnet20"),
    "l2p-cifar10-resnet32": dict(_L2P_CIFAR10, model="resnet32"),  # Table 2 only
    "l2p-cifar10-resnet44": dict(_L2P_CIFAR10, model="resnet44"),  # Table 2 only
    "l2p-cifar10-resnet56": dict(_L2P_CIFAR10, model="resnet56"),
    "l2p-cifar10-resnet_v2_18": dict(_L2P_CIFAR10, model="resnet_v2_18"),
    # Table 2, ResNet-V1(20)[1.5x], [2x], [4x]: every layer's channels times the factor
    # (supplement: "increasing the number of input/output channels"); 605,026, 1,073,962
    # and 4,286,026 parameters, as the table counts them
    "l2p-cifar10-resnet20-x1.5": dict(_L2P_CIFAR10, model="resnet20", model_kwargs={"width": 1.5}),
    "l2p-cifar10-resnet20-x2": dict(_L2P_CIFAR10, model="resnet20", model_kwargs={"width": 2.0}),
    "l2p-cifar10-resnet20-x4": dict(_L2P_CIFAR10, model="resnet20", model_kwargs={"width": 4.0}),
    # Table 1, "Learn2Perturb-R" columns (Sec. 4.3: theta updated by g(theta) alone)
    "l2p-r-cifar10-resnet20": dict(_L2P_CIFAR10, method="learn2perturb-r", model="resnet20"),
    "l2p-r-cifar10-resnet56": dict(_L2P_CIFAR10, method="learn2perturb-r", model="resnet56"),
    "l2p-r-cifar10-resnet_v2_18": dict(
        _L2P_CIFAR10, method="learn2perturb-r", model="resnet_v2_18"
    ),
    # Table 1, "Vanilla" columns
    "pgd-at-cifar10-resnet20": dict(_PGD_AT_CIFAR10, model="resnet20"),
    "pgd-at-cifar10-resnet56": dict(_PGD_AT_CIFAR10, model="resnet56"),
    "pgd-at-cifar10-resnet_v2_18": dict(_PGD_AT_CIFAR10, model="resnet_v2_18"),
    "pni-cifar10-resnet20": dict(_PNI_CIFAR10, model="resnet20"),
    "nfgsm-mnist": dict(_NFGSM_SMALL, dataset="mnist", eps=8 / 255),
    "pnil-mnist": dict(_NFGSM_SMALL, dataset="mnist", eps=8 / 255, pnil=True),
    "nfgsm-fashion-mnist": dict(_NFGSM_SMALL, dataset="fashion-mnist", eps=4 / 255),
    "pnil-fashion-mnist": dict(_NFGSM_SMALL, dataset="fashion-mnist", eps=4 / 255, pnil=True),
    "nfgsm-cifar10-resnet11": dict(_NFGSM_SMALL, dataset="cifar10", model="resnet11", eps=0.03),
    "pnil-cifar10-resnet11": dict(
        _NFGSM_SMALL, dataset="cifar10", model="resnet11", eps=0.03, pnil=True
    ),
    # PNIL paper Table 1, "RFGSM Training": Baseline and + PNIL rows of each data set
    "rfgsm-mnist": dict(_RFGSM_SMALL, dataset="mnist", eps=8 / 255),
    "rfgsm-pnil-mnist": dict(_RFGSM_SMALL, dataset="mnist", eps=8 / 255, pnil=True),
    "rfgsm-fashion-mnist": dict(_RFGSM_SMALL, dataset="fashion-mnist", eps=4 / 255),
    "rfgsm-pnil-fashion-mnist": dict(_RFGSM_SMALL, dataset="fashion-mnist", eps=4 / 255, pnil=True),
    "rfgsm-cifar10-resnet11": dict(_RFGSM_SMALL, dataset="cifar10", model="resnet11", eps=0.03),
    "rfgsm-pnil-cifar10-resnet11": dict(
        _RFGSM_SMALL, dataset="cifar10", model="resnet11", eps=0.03, pnil=True
    ),
    # Cohen et al. 2019: Gaussian data augmentation for randomized smoothing (issue 14)
    "gaussian-mnist": dict(_GAUSSIAN_SMALL, dataset="mnist"),
    "gaussian-fashion-mnist": dict(_GAUSSIAN_SMALL, dataset="fashion-mnist"),
    "gaussian-cifar10": dict(_GAUSSIAN, dataset="cifar10", model="resnet56", augment=True),
}
