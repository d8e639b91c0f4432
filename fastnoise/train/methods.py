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
from fastnoise.train.batchnorm import batchnorm_stats_kept, frozen_batchnorm
from fastnoise.train.config import TrainConfig
from fastnoise.train.distributed import average_across_ranks
from fastnoise.train.forwards import TrainForward
from fastnoise.train.noise_params import (
    perturbation_modules,
    pni_parameters,
    regularizer_g,
    set_noise_enabled,
    theta_parameters,
)
from fastnoise.train.schedules import harmonic_tau, learning_rate, noise_enabled

__all__ = ["TrainingMethod"]


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
        # TrainForward(model), maybe inside DDP / torch.compile: model(x) for one batch,
        # a tuple of logits for several (modules can be falsy: compare with None)
        self.local_forward = TrainForward(model, concatenate=config.mixed_bn)
        self.train_forward = self.local_forward if train_forward is None else train_forward
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
    def _forward(self, model: nn.Module, *inputs: torch.Tensor):
        with self.autocast():
            return model(*inputs)

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

    def _attack_batchnorm(self) -> contextlib.AbstractContextManager:
        """BatchNorm's mode while a training attack runs (``attack_bn``)."""
        if self.config.attack_bn_mode == "frozen":
            return frozen_batchnorm(self.model)
        return contextlib.nullcontext()

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
        with self._attack_batchnorm():
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

    def _adversarial_examples(self, x, y):
        c = self.config
        with self._attack_batchnorm():
            return adv.pgd_examples(
                self.model, x, y, c.eps, c.attack_step_size, c.attack_steps, self._attack_forward
            )

    def _mixed_loss(self, x, x_adv, y, forward: nn.Module | None = None):
        """The Eq. (11) loss from one call of ``forward`` (default: the training module, so
        a DDP model takes exactly one forward per backward) over both batches."""
        c = self.config
        forward = self.train_forward if forward is None else forward
        clean_logits, adv_logits = self._forward(forward, x, x_adv)
        clean_logits, adv_logits = clean_logits.float(), adv_logits.float()
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
        x_adv = self._adversarial_examples(x, y)
        self._zero_grad()
        loss, stats = self._mixed_loss(x, x_adv, y)
        self._backward(loss)
        self._step(self.optimizers["weights"])
        self._finish()
        return stats


class Learn2Perturb(_MixedLoss):
    """Learn2Perturb Algorithm 1: alternating updates of W and theta, per batch.

    ``theta_update`` picks the theta step (L = the Eq. (11) loss, g = Eq. (8)):

    - ``algorithm1``: first W <- W - lr * grad_W L, then, with W fixed at the new value
      (the text: theta is trained "while W is fixed"), a plain step
      theta <- theta - lr * grad_theta L - gamma * grad_theta g, as Algorithm 1 prints it
      (gamma not scaled by the lr, no momentum). grad L comes from a second forward and
      backward on the same clean and adversarial batch; grad g is taken at the old theta.
    - ``joint``: both halves use the gradient of one forward at the old (W, theta), theta
      stepped by SGD with Nesterov momentum on lr * (grad L + gamma * grad g).
    - ``released-code``: the order of the released train.py: a theta step on gamma * g
      alone, then one forward at (W, new theta) whose grad L steps W and theta together,
      both theta steps through the same Nesterov-momentum SGD.

    Every rule ends with the projection theta >= theta_min. Learn2Perturb-R drops grad L.
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
        self.noise_on = True
        self._batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _noise_params(self):
        return theta_parameters(self.model)

    def _build_optimizers(self):
        opts = super()._build_optimizers()  # W: weight decay 1e-4 (A.4)
        c = self.config
        plain = c.theta_update == "algorithm1"  # Algorithm 1's step has no momentum
        opts["theta"] = torch.optim.SGD(  # theta: weight decay 0 (A.4)
            [{"params": self._noise_params(), "weight_decay": c.noise_weight_decay}],
            lr=c.noise_lr if c.noise_lr is not None else c.lr,
            momentum=0.0 if plain else c.momentum,
            nesterov=False if plain else _nesterov(c),
        )
        return opts

    def begin_epoch(self, epoch):
        self.noise_on = noise_enabled(self.config, epoch)
        set_noise_enabled(self.model, self.noise_on)
        if self.noise_on:
            self.tau = harmonic_tau(epoch, self.config.noise_off_epochs)  # Eq. (9)
        return {"tau": self.tau if self.noise_on else None, "noise_on": self.noise_on}

    def _regularizer_gradients(self) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """gamma * g(theta) (Eq. 7-8) and its gradient, at the current theta."""
        thetas = self._noise_params()
        with torch.enable_grad():
            reg = self.config.gamma * regularizer_g(thetas, self.tau)
            grads = torch.autograd.grad(reg, thetas)
        return reg.detach(), tuple(g.to(t.dtype) for g, t in zip(grads, thetas, strict=True))

    def _clamp(self) -> None:
        for _, m in perturbation_modules(self.model):
            m.clamp_()  # values below theta_min are projected to theta_min

    def weights_half(self, x, y) -> dict[str, torch.Tensor]:
        """Algorithm 1, first half: W <- W - lr * grad_W L, theta fixed."""
        x_adv = self._adversarial_examples(x, y)
        self._batch = (x, x_adv, y)  # the theta half of algorithm1 reuses it
        self._zero_grad()
        loss, stats = self._mixed_loss(x, x_adv, y)
        self._backward(loss)
        self._step(self.optimizers["weights"])
        return stats

    def noise_half(self) -> torch.Tensor:
        """Algorithm 1, second half, with W fixed; returns gamma * g(theta) for the log."""
        opt = self.optimizers["theta"]
        thetas = self._noise_params()
        batch, self._batch = self._batch, None
        if not self.noise_on:  # noise off: L does not depend on theta, tau is undefined
            opt.zero_grad(set_to_none=True)
            return torch.zeros((), device=thetas[0].device)
        if self.config.theta_update == "joint":
            return self._joint_theta_step(opt, thetas)
        return self._algorithm1_theta_step(opt, thetas, batch)

    def _joint_theta_step(self, opt, thetas) -> torch.Tensor:
        """theta -= lr * (grad L + gamma * grad g) through SGD (momentum), grad L left by
        the W half's backward at the old W."""
        if self.scaler is not None:
            self.scaler.unscale_(opt)  # the regularizer's gradient is added unscaled
        if self.regularizer_only:
            for t in thetas:
                t.grad = None
        reg, reg_grads = self._regularizer_gradients()
        for t, g in zip(thetas, reg_grads, strict=True):
            t.grad = g if t.grad is None else t.grad + g
        if self.scaler is not None and self.regularizer_only:
            opt.step()  # nothing was scaled, nothing can overflow
        else:
            self._step(opt)
        self._clamp()
        return reg

    def _algorithm1_theta_step(self, opt, thetas, batch) -> torch.Tensor:
        """Algorithm 1: theta <- theta - lr * grad L(W_new, theta) - gamma * grad g(theta)."""
        opt.zero_grad(set_to_none=True)
        reg, reg_grads = self._regularizer_gradients()  # at theta_{t-1}
        if not self.regularizer_only:
            x, x_adv, y = batch
            # the unwrapped model: only theta's gradient is wanted (a DDP module would wait
            # for all of W's), averaged over the ranks by hand; the W half has already
            # counted this batch in BatchNorm's running statistics
            with batchnorm_stats_kept(self.model), torch.enable_grad():
                loss, _ = self._mixed_loss(x, x_adv, y, forward=self.local_forward)
                scaled = self.scaler.scale(loss) if self.scaler is not None else loss
                grads = torch.autograd.grad(scaled, thetas, allow_unused=True)
            grads = [
                torch.zeros_like(t) if g is None else g for g, t in zip(grads, thetas, strict=True)
            ]
            for t, g in zip(thetas, average_across_ranks(grads), strict=True):
                t.grad = g.to(t.dtype)
            self._step(opt)  # lr * grad L (a scaled gradient is unscaled first)
        with torch.no_grad():
            for t, g in zip(thetas, reg_grads, strict=True):
                t.sub_(g)  # gamma * grad g: Algorithm 1 does not multiply it by the lr
        self._clamp()
        return reg

    def _released_code_step(self, x, y) -> dict[str, torch.Tensor]:
        """The released train.py: a theta step on gamma * g alone, then W and theta both
        stepped on grad L of one forward at (W, that theta), then the clamp."""
        opt = self.optimizers["theta"]
        thetas = self._noise_params()
        reg = torch.zeros((), device=thetas[0].device)
        if self.noise_on:
            opt.zero_grad(set_to_none=True)
            reg, reg_grads = self._regularizer_gradients()
            for t, g in zip(thetas, reg_grads, strict=True):
                t.grad = g
            opt.step()  # unscaled: nothing to unscale, nothing can overflow
        x_adv = self._adversarial_examples(x, y)
        self._zero_grad()
        loss, stats = self._mixed_loss(x, x_adv, y)
        self._backward(loss)
        self._step(self.optimizers["weights"])
        if self.noise_on and not self.regularizer_only:
            self._step(opt)  # the same momentum buffer as the regularizer step
        else:
            opt.zero_grad(set_to_none=True)
        self._clamp()
        stats["reg"] = reg
        return stats

    def train_step(self, x, y, epoch):
        if self.config.theta_update == "released-code":
            stats = self._released_code_step(x, y)
        else:
            stats = self.weights_half(x, y)
            stats["reg"] = self.noise_half()
        self._finish()
        return stats


class Learn2PerturbR(Learn2Perturb):
    regularizer_only = True
