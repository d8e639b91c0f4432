"""Self-checks that catch a broken evaluation before it reaches a paper.

After Athalye et al. 2018 ("Obfuscated gradients give a false sense of security"),
Carlini et al. 2019 ("On evaluating adversarial robustness") and AutoAttack's checks:
iterative attacks must beat single-step ones, white-box must beat black-box, accuracy
must fall as the budget grows, an unbounded attack must reach 0%, gradients must be
finite and non-zero, and a randomized model must be attacked with EOT.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastnoise.eval.report import AttackResult, CheckResult, RobustnessReport, SweepResult

__all__ = [
    "noise_margin",
    "is_randomized",
    "check_randomized",
    "check_gradients",
    "check_unbounded_attack",
    "check_iterative_vs_single_step",
    "check_white_box_vs_black_box",
    "check_eot_on_randomized",
    "check_eps_sweeps",
    "result_checks",
    "model_checks",
]

WHITE_BOX = ("single-step", "iterative")
BLACK_BOX = ("gradient-free", "transfer")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _variance_of_mean(accuracies: Sequence[float], n_samples: int) -> float:
    if len(accuracies) >= 2:
        mean = math.fsum(accuracies) / len(accuracies)
        var = math.fsum((a - mean) ** 2 for a in accuracies) / (len(accuracies) - 1)
        return var / len(accuracies)
    # One repeat: no spread to measure, so assume binomial noise (conservative).
    p = accuracies[0]
    return p * (1 - p) / max(n_samples, 1)


def noise_margin(a: Sequence[float], b: Sequence[float], n_samples: int) -> float:
    """How far two mean accuracies may differ by chance: two standard errors of the
    difference, plus one sample (accuracy moves in steps of 1/n)."""
    se = math.sqrt(_variance_of_mean(a, n_samples) + _variance_of_mean(b, n_samples))
    return 2 * se + 1 / max(n_samples, 1)


# -- checks on the measured accuracies --------------------------------------------------------


def check_iterative_vs_single_step(attacks: Sequence[AttackResult], n_samples: int) -> CheckResult:
    """An iterative attack with at least the budget of a single-step one must be as strong."""
    name = "iterative_vs_single_step"
    pairs = [
        (it, ss)
        for it in attacks
        if it.kind == "iterative"
        for ss in attacks
        if ss.kind == "single-step" and ss.norm == it.norm and it.eps >= ss.eps
    ]
    if not pairs:
        return CheckResult(name, "skip", "needs an iterative and a single-step attack (same norm)")
    bad = [
        (it, ss)
        for it, ss in pairs
        if it.mean - ss.mean > noise_margin(it.accuracies, ss.accuracies, n_samples)
    ]
    if bad:
        it, ss = bad[0]
        return CheckResult(
            name,
            "fail",
            f"{it.name} ({_pct(it.mean)}) is weaker than single-step {ss.name} "
            f"({_pct(ss.mean)}) beyond noise: too few steps, a bad step size or masked gradients",
        )
    return CheckResult(
        name, "pass", f"every iterative attack is at least as strong as single-step ({len(pairs)})"
    )


def check_white_box_vs_black_box(attacks: Sequence[AttackResult], n_samples: int) -> CheckResult:
    """Transfer and gradient-free attacks must not beat white-box ones with the same budget."""
    name = "white_box_vs_black_box"
    compared = 0
    for bb in (a for a in attacks if a.kind in BLACK_BOX):
        rivals = [
            a for a in attacks if a.kind in WHITE_BOX and a.norm == bb.norm and a.eps >= bb.eps
        ]
        if not rivals:
            continue
        compared += 1
        wb = min(rivals, key=lambda a: a.mean)
        if wb.mean - bb.mean > noise_margin(wb.accuracies, bb.accuracies, n_samples):
            return CheckResult(
                name,
                "fail",
                f"{bb.kind} attack {bb.name} ({_pct(bb.mean)}) beats the best white-box attack "
                f"{wb.name} ({_pct(wb.mean)}): a sign of obfuscated gradients",
            )
    if compared == 0:
        return CheckResult(
            name, "skip", "needs a white-box and a black-box attack with comparable budgets"
        )
    return CheckResult(
        name, "pass", f"white-box attacks are at least as strong as black-box ones ({compared})"
    )


def check_eot_on_randomized(
    attacks: Sequence[AttackResult], randomized: bool | None
) -> CheckResult:
    """Gradient attacks on a randomized model should average gradients over noise draws."""
    name = "eot_on_randomized"
    if randomized is None:
        return CheckResult(name, "skip", "randomness of the model was not checked")
    if not randomized:
        return CheckResult(name, "pass", "deterministic model: EOT is not needed")
    plain = [a.name for a in attacks if a.kind in WHITE_BOX and a.eot <= 1]
    with_eot = [a.name for a in attacks if a.kind in WHITE_BOX and a.eot > 1]
    if plain and not with_eot:
        return CheckResult(
            name,
            "warn",
            f"randomized model attacked without EOT ({', '.join(plain)}): single noise draws "
            "give noisy gradients, so these accuracies may overstate robustness; add eot-pgd",
        )
    if plain:
        return CheckResult(
            name,
            "info",
            f"EOT-less gradient attacks ({', '.join(plain)}) on a randomized model; "
            f"EOT attacks present: {', '.join(with_eot)}",
        )
    return CheckResult(name, "pass", "every gradient attack on the randomized model uses EOT")


def check_eps_sweeps(sweeps: Sequence[SweepResult]) -> CheckResult:
    """Accuracy must not rise with the budget, and should fall along the sweep."""
    name = "accuracy_falls_with_eps"
    usable = [s for s in sweeps if len(s.eps_values) >= 2]
    if not usable:
        return CheckResult(name, "skip", "no accuracy-vs-eps sweep was run")
    flat = []
    for s in usable:
        order = sorted(range(len(s.eps_values)), key=lambda i: s.eps_values[i])
        accs = [s.accuracies[i] for i in order]
        eps = [s.eps_values[i] for i in order]
        n = s.n_samples
        for i in range(len(accs) - 1):
            lo, hi = accs[i], accs[i + 1]
            rise = sum(hi) / len(hi) - sum(lo) / len(lo)
            if rise > noise_margin(lo, hi, n):
                return CheckResult(
                    name,
                    "fail",
                    f"{s.label}: accuracy rises from {_pct(sum(lo) / len(lo))} to "
                    f"{_pct(sum(hi) / len(hi))} as eps grows {eps[i]:.4g} -> {eps[i + 1]:.4g}",
                )
        first, last = accs[0], accs[-1]
        drop = sum(first) / len(first) - sum(last) / len(last)
        if drop <= noise_margin(first, last, n):
            flat.append(s.label)
    if flat:
        return CheckResult(
            name, "warn", f"accuracy does not fall as eps grows for {', '.join(flat)}"
        )
    final = ", ".join(f"{s.label} {_pct(s.means[-1])}" for s in usable)
    return CheckResult(name, "pass", f"accuracy falls as eps grows (largest eps: {final})")


def result_checks(report: RobustnessReport) -> list[CheckResult]:
    """The checks that only need the measured numbers."""
    return [
        check_iterative_vs_single_step(report.attacks, report.n_samples),
        check_white_box_vs_black_box(report.attacks, report.n_samples),
        check_eot_on_randomized(report.attacks, report.randomized),
        check_eps_sweeps(report.sweeps),
    ]


# -- checks that run the model ----------------------------------------------------------------


@torch.no_grad()
def is_randomized(
    model: nn.Module, x: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-6
) -> bool:
    """True when two forward passes of the same input give different outputs.

    The tolerance absorbs non-deterministic GPU reductions; injected noise is far larger.
    """
    return not torch.allclose(model(x), model(x), rtol=rtol, atol=atol)


def check_randomized(model: nn.Module, x: torch.Tensor) -> tuple[CheckResult, bool]:
    randomized = is_randomized(model, x)
    if randomized:
        result = CheckResult(
            "randomized_model",
            "info",
            "two forward passes of the same input differ: a randomized defense, so robust "
            "accuracy is a random variable and gradient attacks need EOT",
        )
    else:
        result = CheckResult(
            "randomized_model", "pass", "two forward passes agree: the model is deterministic"
        )
    return result, randomized


def check_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> CheckResult:
    """Input gradients of the loss must be finite and non-zero (else attacks are blind)."""
    name = "gradients"
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)  # input only: parameters' .grad stay untouched
    if not bool(torch.isfinite(grad).all()):
        bad = int((~torch.isfinite(grad.flatten(1))).any(1).sum())
        return CheckResult(name, "fail", f"NaN/inf input gradients for {bad}/{len(x)} samples")
    zero = int((grad.flatten(1).abs().amax(1) == 0).sum())
    if zero:
        return CheckResult(
            name,
            "warn",
            f"{zero}/{len(x)} samples have an all-zero input gradient: gradient attacks cannot "
            "move them (saturated softmax or a non-differentiable layer)",
        )
    return CheckResult(name, "pass", f"input gradients are finite and non-zero ({len(x)} samples)")


def _default_unbounded_attack(
    model: nn.Module,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from fastnoise.attacks import build

    # eps = 1 over [0, 1] pixels: the whole box is allowed, so any classifier must fall.
    return build("pgd", model, eps=1.0, alpha=0.1, steps=30)


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def check_unbounded_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> CheckResult:
    """An attack allowed the whole input box must reach 0% accuracy (Carlini et al. 2019)."""
    name = "unbounded_attack"
    if attack is None:
        try:
            attack = _default_unbounded_attack(model)
        except ImportError as err:
            return CheckResult(name, "skip", f"fastnoise.attacks is not available ({err})")
    with torch.enable_grad():
        x_adv = attack(x, y).detach()
    acc = _accuracy(model, x_adv, y)
    label = getattr(attack, "name", type(attack).__name__)
    if acc == 0:
        return CheckResult(name, "pass", f"unbounded {label} reaches 0% on {len(x)} samples")
    status = "warn" if acc <= 0.05 else "fail"
    return CheckResult(
        name,
        status,
        f"unbounded {label} leaves {_pct(acc)} of {len(x)} samples correct: the attack is "
        "broken or gradients are masked, so bounded results are not trustworthy",
    )


def model_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    unbounded_attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[list[CheckResult], bool]:
    """The checks that run the model on a small subset; also returns ``randomized``."""
    randomness, randomized = check_randomized(model, x)
    checks = [
        randomness,
        check_gradients(model, x, y),
        check_unbounded_attack(model, x, y, unbounded_attack),
    ]
    return checks, randomized
