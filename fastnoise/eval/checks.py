"""Self-checks that catch a broken evaluation before it reaches a paper.

After Athalye et al. 2018 ("Obfuscated gradients give a false sense of security"),
Carlini et al. 2019 ("On evaluating adversarial robustness") and AutoAttack's checks:
iterative attacks must beat single-step ones, white-box must beat black-box, accuracy
must fall as the budget grows, an unbounded attack must reach 0%, gradients must be
finite and non-zero, and a randomized model must be attacked with EOT.

Statuses say only what the data show (see ``report.STATUSES``):

- ``pass``: the check's claim is *shown*. For the two attack comparisons that means each
  expected-stronger attack is shown at least as strong as its rival to within ``MARGIN``
  (one percentage point of accuracy) at level ``ALPHA`` -- not merely "no problem found".
- ``fail``: the problem is shown at level ``ALPHA`` after Holm's correction.
- ``inconclusive``: neither. The message gives the counts and both p-values; more samples
  or repeats would decide. Absence of evidence of a problem is reported here, not as PASS.
- ``warn`` / ``info`` / ``skip``: as before (a warning sign, a neutral finding, nothing to
  compare).

Paired statistics. ``RobustnessReport.outcomes`` holds, per attack, whether each sample was
classified correctly in each repeat, on the same noise draw for every attack; two attacks'
outcomes of one (repeat, sample) form a pair. Discordant pairs are pooled over repeats:
with R repeats of n samples there are R * n pairs. Pairs of one sample in different
repeats are not independent (a borderline sample tends to be discordant in every repeat),
so with R > 1 the p-values are somewhat optimistic; with R = 1 the tests are exact.

For one comparison, "A at least as strong as B" (A leaves no more samples correct):
n10 counts pairs where A is correct and B fooled (against the expectation), n01 the
reverse, N all pairs. All tests are ``scipy.stats.binomtest``:

- problem: McNemar's exact test, one-sided, ``binomtest(n10, n10 + n01, 1/2, "greater")``.
- shown fine, by either route: A significantly stronger (the same test, ``"less"``), or
  A correct where B is fooled in fewer than ``MARGIN`` of all pairs,
  ``binomtest(n10, N, MARGIN, "less")`` -- since acc(A) - acc(B) = (n10 - n01) / N <=
  n10 / N this shows A weaker by less than ``MARGIN``. Either route may give the verdict,
  so the comparison's p is 2 * min of the two (Bonferroni) and must be below ``ALPHA``.

Several comparisons. FAIL asserts "at least one comparison shows a problem", so its
p-values are Holm-adjusted over every paired comparison of the report's attack checks
(``result_checks`` makes one family of both checks; a check called alone makes its own):
noise alone makes any of them FAIL with probability at most ``ALPHA``. PASS asserts
"every comparison is fine", an intersection-union claim: each comparison at ``ALPHA``
already keeps the whole claim at ``ALPHA``, so no correction is needed. A black-box attack
shows a problem only if it significantly beats *every* white-box rival (its p is the
largest), and is fine if *some* rival is shown at least as strong (the smallest p times
the number of rivals, Bonferroni).

Unpaired fallback. A report loaded from JSON has no outcomes (and without scipy no exact
test runs): the comparison then uses the per-repeat mean accuracies as independent
samples with :func:`noise_margin` (about two standard errors), and every message says
"unpaired, approximate". FAIL: worse by more than the noise margin; PASS: worse by less
than ``MARGIN`` even after adding the noise margin; otherwise inconclusive. The eps-sweep
check is always unpaired (sweeps keep no per-sample outcomes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastnoise.eval.report import AttackResult, CheckResult, RobustnessReport, SweepResult

__all__ = [
    "ALPHA",
    "MARGIN",
    "McNemar",
    "mcnemar",
    "holm",
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

# Significance level of every statistical check (family-wise for FAIL, see the docstring).
ALPHA = 0.05
# How much weaker (in accuracy, a fraction) an attack may be and still count as "at least
# as strong" for a PASS: one percentage point.
MARGIN = 0.01


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    return f"{100 * x:.1f} percentage point{'' if round(100 * x, 1) == 1 else 's'}"


def _p(p: float) -> str:
    return f"{p:.2g}"


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
    difference, plus one sample (accuracy moves in steps of 1/n). Unpaired: it treats the
    two attacks' accuracies as independent, which the paired tests do not need."""
    se = math.sqrt(_variance_of_mean(a, n_samples) + _variance_of_mean(b, n_samples))
    return 2 * se + 1 / max(n_samples, 1)


# -- paired statistics ------------------------------------------------------------------------


@dataclass(frozen=True)
class McNemar:
    """Exact paired comparison of attack A (``first``) with attack B (``second``), A being
    expected at least as strong (no more samples correct). See the module docstring."""

    n: int  # pairs (repeats x samples, pooled)
    n10: int  # A correct, B fooled: against the expectation
    n01: int  # A fooled, B correct
    p_weaker: float  # one-sided exact McNemar: A is weaker than B
    p_stronger: float  # one-sided exact McNemar: A is stronger than B
    p_within: float  # exact binomial: n10 / n < margin, so A is weaker by less than margin
    margin: float

    @property
    def p_ok(self) -> float:
        """p-value of "A at least as strong, to within the margin" (either route)."""
        return min(1.0, 2 * min(self.p_stronger, self.p_within))

    def ok_route(self, a: str, b: str) -> str:
        """How A (named ``a``) was shown at least as strong as B (``b``)."""
        if self.p_stronger <= self.p_within:
            return f"{a} significantly stronger"
        return f"{a} correct where {b} is fooled in under {_pct(self.margin)} of pairs"


def _as_bool(t: Any) -> torch.Tensor:
    t = torch.as_tensor(t)
    return t if t.dtype == torch.bool else t != 0


def mcnemar(first: Any, second: Any, margin: float = MARGIN) -> McNemar:
    """Paired outcomes (True = correct) of two attacks on the same samples and noise draws,
    any equal shapes (e.g. (repeats, n_samples)); all pairs are pooled. Needs scipy."""
    from scipy.stats import binomtest

    a, b = _as_bool(first), _as_bool(second)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes must have equal shapes, got {a.shape} and {b.shape}")
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    n = a.numel()
    n10 = int((a & ~b).sum())
    n01 = int((~a & b).sum())
    d = n10 + n01
    # No discordant pair: nothing shows either attack stronger.
    p_weaker = float(binomtest(n10, d, 0.5, alternative="greater").pvalue) if d else 1.0
    p_stronger = float(binomtest(n10, d, 0.5, alternative="less").pvalue) if d else 1.0
    p_within = float(binomtest(n10, n, margin, alternative="less").pvalue) if n else 1.0
    return McNemar(n, n10, n01, p_weaker, p_stronger, p_within, margin)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order."""
    m = len(pvalues)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


# -- one claim of a comparison check ----------------------------------------------------------


@dataclass
class _Claim:
    """One claim of a check (an iterative attack vs a single-step one; a black-box attack vs
    its white-box rivals), decided paired (p-values) or unpaired (noise margin)."""

    detail: str
    paired: bool
    p_bad: float = 1.0  # paired: raw p of the problem
    p_ok: float = 1.0  # paired: p of "fine"
    ok_route: str = ""
    bad: bool = False  # unpaired verdicts
    ok: bool = False
    p_bad_holm: float = 1.0
    family: int = 1
    rivals: int = 1  # a black-box claim against several white-box rivals

    @property
    def failed(self) -> bool:
        return self.p_bad_holm < ALPHA if self.paired else self.bad

    @property
    def passed(self) -> bool:
        return not self.failed and (self.p_ok < ALPHA if self.paired else self.ok)

    def text(self, status: str) -> str:
        if not self.paired:
            return self.detail
        several = self.rivals > 1
        if status == "fail":
            raw = f"largest p over the {self.rivals} rivals" if several else "p"
            why = f"{raw}={_p(self.p_bad)}, Holm-adjusted over {self.family}: {_p(self.p_bad_holm)}"
        elif status == "pass":
            times = f" (x{self.rivals} rivals)" if several else ""
            why = f"{self.ok_route}, p={_p(self.p_ok)}{times}"
        else:
            why = (
                f"p(problem)={_p(self.p_bad_holm)} Holm-adjusted over {self.family}, "
                f"p(at least as strong)={_p(self.p_ok)}"
            )
        return f"{self.detail}; {why}"


def _apply_holm(claims: Sequence[_Claim]) -> None:
    paired = [c for c in claims if c.paired]
    for claim, adjusted in zip(paired, holm([c.p_bad for c in paired]), strict=True):
        claim.p_bad_holm, claim.family = adjusted, len(paired)


def _outcome(outcomes: Mapping[str, Any] | None, attacks: Sequence[AttackResult], a):
    """The attack's outcomes, or None (no outcomes; name missing or shared by two attacks)."""
    if outcomes is None or sum(b.name == a.name for b in attacks) != 1:
        return None
    return outcomes.get(a.name)


def _unpaired_reason(outcomes: Mapping[str, Any] | None) -> str:
    if outcomes is None:
        return "no per-sample outcomes (a loaded report)"
    return "no per-sample outcomes for this attack"


def _pair_text(a: AttackResult, b: AttackResult, test: McNemar, repeats: int) -> str:
    pooled = f", {repeats} repeats pooled" if repeats > 1 else ""
    return (
        f"{a.name} {_pct(a.mean)} vs {b.name} {_pct(b.mean)}: n10={test.n10} ({a.name} correct, "
        f"{b.name} fooled), n01={test.n01} (the reverse) of {test.n} pairs{pooled}"
    )


def _try_mcnemar(x: Any, y: Any) -> tuple[McNemar | None, str]:
    try:
        return mcnemar(x, y), ""
    except ImportError:
        return None, "scipy is not installed"


def _repeats(x: Any) -> int:
    shape = torch.as_tensor(x).shape
    return shape[0] if len(shape) == 2 else 1


def _unpaired_claim(
    a: AttackResult, b: AttackResult, n_samples: int, reason: str, against: str
) -> _Claim:
    """A should be at least as strong as B; ``against`` names the problem (e.g. "weaker")."""
    worse = a.mean - b.mean  # > 0: A leaves more samples correct than B
    m = noise_margin(a.accuracies, b.accuracies, n_samples)
    detail = (
        f"{a.name} {_pct(a.mean)} vs {b.name} {_pct(b.mean)} (unpaired, approximate: "
        f"{reason}; {a.name} {against} by {100 * worse:+.1f} points, noise margin "
        f"{100 * m:.1f} points)"
    )
    return _Claim(detail, paired=False, bad=worse > m, ok=worse + m <= MARGIN)


def _message(
    status: str, claims: Sequence[_Claim], fail: str, ok: str, unsure: str, hint: str = ""
) -> str:
    if any(c.paired for c in claims):
        level = f"alpha={ALPHA}, exact one-sided McNemar"
    else:
        level = "unpaired noise margin of about two standard errors"
    if status == "fail":
        shown = [c for c in claims if c.failed]
        return f"{fail} ({level}): " + "; ".join(c.text(status) for c in shown) + hint
    if status == "pass":
        head = f"{ok}, to within {_pts(MARGIN)} ({level})"
        return f"{head}: " + "; ".join(c.text(status) for c in claims)
    open_ = [c for c in claims if not c.passed]
    return (
        f"{unsure} ({level}, margin {_pts(MARGIN)}): "
        + "; ".join(c.text(status) for c in open_)
        + "; more samples or repeats would decide"
    )


def _status(claims: Sequence[_Claim]) -> str:
    if any(c.failed for c in claims):
        return "fail"
    return "pass" if all(c.passed for c in claims) else "inconclusive"


# -- checks on the measured accuracies --------------------------------------------------------


def _iterative_claims(
    attacks: Sequence[AttackResult], n_samples: int, outcomes: Mapping[str, Any] | None
) -> list[_Claim]:
    claims = []
    for it in attacks:
        if it.kind != "iterative":
            continue
        for ss in attacks:
            if ss.kind != "single-step" or ss.norm != it.norm or it.eps < ss.eps:
                continue
            x, y = _outcome(outcomes, attacks, it), _outcome(outcomes, attacks, ss)
            test, reason = _try_mcnemar(x, y) if x is not None and y is not None else (None, "")
            if test is None:
                reason = reason or _unpaired_reason(outcomes)
                claims.append(_unpaired_claim(it, ss, n_samples, reason, "weaker"))
            else:
                claims.append(
                    _Claim(
                        _pair_text(it, ss, test, _repeats(x)),
                        paired=True,
                        p_bad=test.p_weaker,
                        p_ok=test.p_ok,
                        ok_route=test.ok_route(it.name, ss.name),
                    )
                )
    return claims


def _iterative_result(claims: Sequence[_Claim]) -> CheckResult:
    name = "iterative_vs_single_step"
    if not claims:
        return CheckResult(name, "skip", "needs an iterative and a single-step attack (same norm)")
    status = _status(claims)
    return CheckResult(
        name,
        status,
        _message(
            status,
            claims,
            fail="an iterative attack is significantly weaker than a single-step one",
            ok="every iterative attack is shown at least as strong as single-step",
            unsure="not shown that every iterative attack is at least as strong as single-step",
            hint=": too few steps, a bad step size or masked gradients",
        ),
    )


def check_iterative_vs_single_step(
    attacks: Sequence[AttackResult],
    n_samples: int,
    outcomes: Mapping[str, Any] | None = None,
) -> CheckResult:
    """An iterative attack with at least the budget of a single-step one must be as strong.

    ``outcomes`` (``RobustnessReport.outcomes``) makes the comparisons paired and exact;
    without it they are unpaired and approximate (see the module docstring)."""
    claims = _iterative_claims(attacks, n_samples, outcomes)
    _apply_holm(claims)
    return _iterative_result(claims)


def _black_box_claims(
    attacks: Sequence[AttackResult], n_samples: int, outcomes: Mapping[str, Any] | None
) -> list[_Claim]:
    claims = []
    for bb in (a for a in attacks if a.kind in BLACK_BOX):
        rivals = [
            a for a in attacks if a.kind in WHITE_BOX and a.norm == bb.norm and a.eps >= bb.eps
        ]
        if not rivals:
            continue
        y = _outcome(outcomes, attacks, bb)
        xs = [_outcome(outcomes, attacks, wb) for wb in rivals]
        tests: list[McNemar | None] = []
        reason = ""
        if y is not None and all(x is not None for x in xs):
            for x in xs:
                test, reason = _try_mcnemar(x, y)
                tests.append(test)
        if not tests or any(t is None for t in tests):
            wb = min(rivals, key=lambda a: a.mean)
            reason = reason or _unpaired_reason(outcomes)
            claims.append(_unpaired_claim(wb, bb, n_samples, reason, "weaker"))
            continue
        done = [t for t in tests if t is not None]
        # Problem: bb beats every rival (largest p). Fine: some rival is at least as strong
        # (smallest p, Bonferroni over the rivals).
        best = min(range(len(done)), key=lambda i: done[i].p_ok)
        claims.append(
            _Claim(
                "; ".join(
                    _pair_text(wb, bb, t, _repeats(y)) for wb, t in zip(rivals, done, strict=True)
                ),
                paired=True,
                p_bad=max(t.p_weaker for t in done),
                p_ok=min(1.0, len(done) * done[best].p_ok),
                ok_route=done[best].ok_route(rivals[best].name, bb.name),
                rivals=len(done),
            )
        )
    return claims


def _black_box_result(claims: Sequence[_Claim]) -> CheckResult:
    name = "white_box_vs_black_box"
    if not claims:
        return CheckResult(
            name, "skip", "needs a white-box and a black-box attack with comparable budgets"
        )
    status = _status(claims)
    return CheckResult(
        name,
        status,
        _message(
            status,
            claims,
            fail="a black-box attack is significantly stronger than every white-box rival",
            ok="every black-box attack is matched by a white-box one shown at least as strong",
            unsure="not shown that white-box attacks are at least as strong as black-box ones",
            hint=": a sign of obfuscated gradients",
        ),
    )


def check_white_box_vs_black_box(
    attacks: Sequence[AttackResult],
    n_samples: int,
    outcomes: Mapping[str, Any] | None = None,
) -> CheckResult:
    """Transfer and gradient-free attacks must not beat white-box ones with the same budget.

    ``outcomes`` as for :func:`check_iterative_vs_single_step`."""
    claims = _black_box_claims(attacks, n_samples, outcomes)
    _apply_holm(claims)
    return _black_box_result(claims)


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
    """Accuracy must not rise with the budget, and should fall along the sweep.

    Unpaired and approximate (:func:`noise_margin`): sweeps keep no per-sample outcomes."""
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
                    f"{_pct(sum(hi) / len(hi))} as eps grows {eps[i]:.4g} -> {eps[i + 1]:.4g}, "
                    "beyond the noise margin (unpaired, approximate)",
                )
        first, last = accs[0], accs[-1]
        drop = sum(first) / len(first) - sum(last) / len(last)
        if drop <= noise_margin(first, last, n):
            flat.append(s.label)
    if flat:
        return CheckResult(
            name,
            "warn",
            f"accuracy does not fall beyond the noise margin as eps grows for "
            f"{', '.join(flat)} (unpaired, approximate)",
        )
    final = ", ".join(f"{s.label} {_pct(s.means[-1])}" for s in usable)
    return CheckResult(
        name,
        "pass",
        f"accuracy falls beyond the noise margin from the smallest to the largest eps, and no "
        f"step rises beyond it (unpaired, approximate; largest eps: {final})",
    )


def result_checks(report: RobustnessReport) -> list[CheckResult]:
    """The checks that only need the measured numbers (and ``report.outcomes``, if any).

    The FAIL p-values of both attack comparisons form one Holm family."""
    outcomes = report.outcomes
    iterative = _iterative_claims(report.attacks, report.n_samples, outcomes)
    black_box = _black_box_claims(report.attacks, report.n_samples, outcomes)
    _apply_holm(iterative + black_box)
    return [
        _iterative_result(iterative),
        _black_box_result(black_box),
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
