"""Training methods: what one batch does. The trainer owns the loop, data and bookkeeping.

Each method builds its optimizers and implements ``train_step(x, y, epoch)``, returning
per-batch sums (on the device, so the loop never waits for it) for the epoch metrics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fastnoise.train import adversarial as adv
from fastnoise.train.config import TrainConfig
from fastnoise.train.noise_params import (
    perturbation_modules,
    pni_parameters,
    regularizer_g,
    set_noise_enabled,
    theta_parameters,
)
from fastnoise.train.schedules import harmonic_tau, learning_rate, noise_enabled

__all__ = ["TrainingMethod", "build_method"]


def _make_optimizer(config: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=tuple(config.adam_betas))
    return torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, nesterov=_nesterov(config)
    )


def _nesterov(config: TrainConfig) -> bool:
    return config.nesterov and config.momentum > 0  # torch rejects Nesterov without momentum


class TrainingMethod:
    """Shared machinery: optimizers, precision, the step metrics."""

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        train_forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        scaler: torch.amp.GradScaler | None = None,
    ):
        self.config = config
        self.model = model  # unwrapped: attacks and no-grad forwards use it
        # DDP / compiled wrapper for training (modules can be falsy: compare with None)
        self.train_forward = model if train_forward is None else train_forward
        self.autocast = autocast
        self.scaler = scaler
        self.optimizers: dict[str, torch.optim.Optimizer] = self._build_optimizers()
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["base_lr"] = group["lr"]

    # -- optimizers -------------------------------------------------------------------
    def _noise_params(self) -> list[nn.Parameter]:
        return []

    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        noise_ids = {id(p) for p in self._noise_params()}
        weights = [p for p in self.model.parameters() if id(p) not in noise_ids]
        return {
            "weights": _make_optimizer(
                self.config, [{"params": weights, "weight_decay": self.config.weight_decay}]
            )
        }

    def set_learning_rate(self, epoch: int, step: int, steps: int) -> dict[str, float]:
        lrs = {}
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = learning_rate(self.config, group["base_lr"], epoch, step, steps)
            lrs[name] = opt.param_groups[0]["lr"]
        return lrs

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        """Per-epoch switches; returns values worth logging."""
        return {}

    # -- precision helpers ------------------------------------------------------------
    def _forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return model(x)

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(opt)
        else:
            opt.step()

    def _zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def _finish(self) -> None:
        if self.scaler is not None:
            self.scaler.update()

    @torch.no_grad()
    def _clean_correct(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Clean accuracy for methods that never forward the clean batch (eval mode, so
        batch-norm statistics are not fed clean data the method does not train on)."""
        was_training = self.model.training
        self.model.eval()
        try:
            return (self._forward(self.model, x).argmax(1) == y).sum()
        finally:
            self.model.train(was_training)

    def _attack_forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self._forward(model, x)

    # -- the batch --------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError  # each method below defines its batch


class Standard(TrainingMethod):
    """No defense: cross-entropy on clean images."""

    def train_step(self, x, y, epoch):
        self._zero_grad()
        logits = self._forward(self.train_forward, x).float()
        loss = F.cross_entropy(logits, y)
        self._backward(loss)
        self._step(self.optimizers["weights"])
        self._finish()
        n = y.numel()
        return {
            "loss": loss.detach(),
            "clean_loss": loss.detach() * n,
            "clean_correct": (logits.argmax(1) == y).sum(),
            "n": torch.tensor(n, device=y.device),
        }


class _AdversarialOnly(TrainingMethod):
    """Train on adversarial examples only; subclasses choose how to make them."""

    def _examples(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pgd-at, rfgsm and nfgsm each define theirs

    def train_step(self, x, y, epoch):
        x_adv = self._examples(x, y)
        self._zero_grad()
        logits = self._forward(self.train_forward, x_adv).float()
        loss = F.cross_entropy(logits, y)
        self._backward(loss)
        self._step(self.optimizers["weights"])
        self._finish()
        n = y.numel()
        return {
            "loss": loss.detach(),
            "adv_loss": loss.detach() * n,
            "adv_correct": (logits.argmax(1) == y).sum(),
            "clean_correct": self._clean_correct(x, y),
            "n": torch.tensor(n, device=y.device),
        }


class PGDAT(_AdversarialOnly):
    """Madry et al. 2018: min over W of the PGD adversarial loss only."""

    def _examples(self, x, y):
        c = self.config
        return adv.pgd_examples(
            self.model, x, y, c.eps, c.attack_step_size, c.attack_steps, self._attack_forward
        )


class RFGSM(_AdversarialOnly):
    """Wong et al. 2020, "Fast is better than free": FGSM from a random start, step 1.25 eps.
    The catastrophic-overfitting stop lives in the trainer (it needs the held-out batch)."""

    def _examples(self, x, y):
        c = self.config
        return adv.fgsm_rs_examples(
            self.model, x, y, c.eps, c.fgsm_step_ratio * c.eps, self._attack_forward
        )


class NFGSM(_AdversarialOnly):
    """PNIL paper Algorithm 1 (with ``--pnil`` the model starts with a PNIL, whose weight
    and bias are trained jointly with the rest by the reparameterisation trick)."""

    def _examples(self, x, y):
        c = self.config
        return adv.nfgsm_examples(
            self.model, x, y, c.eps, self._attack_forward, samples=c.train_eot
        )


class _MixedLoss(TrainingMethod):
    """Learn2Perturb Eq. (11) / PNI: alpha * L(clean) + (1 - alpha) * L(PGD examples)."""

    def _mixed_loss(self, x, y):
        c = self.config
        x_adv = adv.pgd_examples(
            self.model, x, y, c.eps, c.attack_step_size, c.attack_steps, self._attack_forward
        )
        # one forward over both halves: a DDP model takes exactly one forward per backward
        logits = self._forward(self.train_forward, torch.cat([x, x_adv])).float()
        clean_logits, adv_logits = logits.split(y.numel())
        clean_loss = F.cross_entropy(clean_logits, y)
        adv_loss = F.cross_entropy(adv_logits, y)
        loss = c.clean_weight * clean_loss + (1.0 - c.clean_weight) * adv_loss
        n = y.numel()
        stats = {
            "loss": loss.detach(),
            "clean_loss": clean_loss.detach() * n,
            "adv_loss": adv_loss.detach() * n,
            "clean_correct": (clean_logits.argmax(1) == y).sum(),
            "adv_correct": (adv_logits.argmax(1) == y).sum(),
            "n": torch.tensor(n, device=y.device),
        }
        return loss, stats


class PNI(_MixedLoss):
    """He et al. 2019: W and the noise scales alpha trained jointly, one optimizer."""

    def _build_optimizers(self):
        alphas = pni_parameters(self.model)
        ids = {id(p) for p in alphas}
        weights = [p for p in self.model.parameters() if id(p) not in ids]
        groups = [{"params": weights, "weight_decay": self.config.weight_decay}]
        if alphas:
            groups.append({"params": alphas, "weight_decay": self.config.noise_weight_decay})
        return {"weights": _make_optimizer(self.config, groups)}

    def train_step(self, x, y, epoch):  # noise on from the start (no warm-up in PNI)
        self._zero_grad()
        loss, stats = self._mixed_loss(x, y)
        self._backward(loss)
        self._step(self.optimizers["weights"])
        self._finish()
        return stats


class Learn2Perturb(_MixedLoss):
    """Learn2Perturb Algorithm 1: alternating updates of W and theta, per batch.

    Both gradients are taken at (W^{t-1}, theta^{t-1}) as Algorithm 1 prints them, so one
    forward/backward serves both halves: first W steps (theta untouched), then theta steps
    with W untouched, using grad L + gamma * grad g (Eq. 7-8), then theta >= theta_min.
    """

    regularizer_only = False  # learn2perturb-r: theta follows gamma * g alone

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not perturbation_modules(self.model):
            raise ValueError(
                f"method {self.config.method!r} needs a model with perturbation-injection "
                "modules (build it with noise='l2p')"
            )
        self.tau = 1.0

    def _noise_params(self):
        return theta_parameters(self.model)

    def _build_optimizers(self):
        opts = super()._build_optimizers()  # W: weight decay 1e-4 (A.4)
        lr = self.config.noise_lr if self.config.noise_lr is not None else self.config.lr
        opts["theta"] = torch.optim.SGD(  # theta: weight decay 0 (A.4), its own momentum
            [{"params": self._noise_params(), "weight_decay": self.config.noise_weight_decay}],
            lr=lr,
            momentum=self.config.momentum,
            nesterov=_nesterov(self.config),
        )
        return opts

    def begin_epoch(self, epoch):
        self.noise_on = noise_enabled(self.config, epoch)
        set_noise_enabled(self.model, self.noise_on)
        if self.noise_on:
            self.tau = harmonic_tau(epoch, self.config.noise_off_epochs)  # Eq. (9)
        return {"tau": self.tau if self.noise_on else None, "noise_on": self.noise_on}

    def weights_half(self, x, y) -> dict[str, torch.Tensor]:
        """Algorithm 1, first half: W <- W - lr * grad_W L, theta fixed."""
        self._zero_grad()
        loss, stats = self._mixed_loss(x, y)
        self._backward(loss)
        self._step(self.optimizers["weights"])
        return stats

    def noise_half(self) -> torch.Tensor:
        """Algorithm 1, second half: theta <- theta - lr * (grad L + gamma * grad g), with W
        fixed, then projection onto theta >= theta_min. Uses the grad L left by the first
        half. Returns gamma * g(theta) for the log."""
        opt = self.optimizers["theta"]
        thetas = self._noise_params()
        if not self.noise_on:  # noise off: L does not depend on theta, tau is undefined
            opt.zero_grad(set_to_none=True)
            return torch.zeros((), device=thetas[0].device)
        if self.scaler is not None:
            self.scaler.unscale_(opt)  # the regularizer's gradient is added unscaled
        if self.regularizer_only:
            for t in thetas:
                t.grad = None
        with torch.enable_grad():
            reg = self.config.gamma * regularizer_g(thetas, self.tau)  # gamma * Eq. (8)
            grads = torch.autograd.grad(reg, thetas)
        for t, g in zip(thetas, grads, strict=True):
            t.grad = g.to(t.dtype) if t.grad is None else t.grad + g.to(t.dtype)
        if self.scaler is not None and self.regularizer_only:
            opt.step()  # nothing was scaled, nothing can overflow
        else:
            self._step(opt)
        for _, m in perturbation_modules(self.model):
            m.clamp_()  # values below theta_min are projected to theta_min
        return reg.detach()

    def train_step(self, x, y, epoch):
        stats = self.weights_half(x, y)
        stats["reg"] = self.noise_half()
        self._finish()
        return stats


class Learn2PerturbR(Learn2Perturb):
    regularizer_only = True


_METHODS: dict[str, type[TrainingMethod]] = {
    "standard": Standard,
    "pgd-at": PGDAT,
    "rfgsm": RFGSM,
    "nfgsm": NFGSM,
    "pni": PNI,
    "learn2perturb": Learn2Perturb,
    "learn2perturb-r": Learn2PerturbR,
}


def build_method(config: TrainConfig, model: nn.Module, **kwargs) -> TrainingMethod:
    """The training method ``config.method`` for ``model`` (unwrapped)."""
    return _METHODS[config.method](config, model, **kwargs)
