"""Paired self-checks (issue 10): exact McNemar tests on per-sample outcomes, Holm over
comparisons, and an "inconclusive" status where the data cannot decide.

Outcomes are built by hand: ``rival(base, n10, n01)`` gives attack B's outcomes from attack
A's with exactly n10 pairs "A correct, B fooled" and n01 pairs "A fooled, B correct".
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from scipy.stats import binomtest
from torch import nn

from fastnoise.eval.checks import (
    ALPHA,
    MARGIN,
    check_iterative_vs_single_step,
    check_white_box_vs_black_box,
    holm,
    mcnemar,
    result_checks,
)
from fastnoise.eval.report import STATUSES, AttackResult, CheckResult, RobustnessReport

EPS = 8 / 255


def base(n: int, correct: int, repeats: int = 1) -> torch.Tensor:
    """Outcomes (repeats, n // repeats) with ``correct`` True entries in all."""
    flat = torch.zeros(n, dtype=torch.bool)
    flat[:correct] = True
    return flat[torch.randperm(n, generator=torch.Generator().manual_seed(n))].view(repeats, -1)


def rival(a: torch.Tensor, n10: int, n01: int) -> torch.Tensor:
    """B's outcomes: flip n10 of A's correct entries to fooled and n01 fooled to correct."""
    flat = a.flatten().clone()
    right, wrong = flat.nonzero().flatten(), (~flat).nonzero().flatten()
    assert n10 <= len(right) and n01 <= len(wrong)
    flat[right[:n10]] = False
    flat[wrong[:n01]] = True
    return flat.view_as(a)


def attack(name: str, kind: str, outcomes: torch.Tensor, eps: float = EPS) -> AttackResult:
    accs = outcomes.float().mean(1).tolist()
    return AttackResult(name=name, eps=eps, norm="linf", kind=kind, accuracies=accs)


def iterative_case(n: int, pgd_correct: int, n10: int, n01: int, repeats: int = 1):
    pgd = base(n, pgd_correct, repeats)
    fgsm = rival(pgd, n10, n01)
    attacks = [attack("fgsm", "single-step", fgsm), attack("pgd", "iterative", pgd)]
    return attacks, {"pgd": pgd, "fgsm": fgsm}


def check_it(n, pgd_correct, n10, n01, repeats=1) -> CheckResult:
    attacks, outcomes = iterative_case(n, pgd_correct, n10, n01, repeats)
    return check_iterative_vs_single_step(attacks, n // repeats, outcomes)


# -- the statistics ------------------------------------------------------------------------------


def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs():
    a = base(1000, 500)
    b = rival(a, 15, 6)
    t = mcnemar(a, b)
    assert (t.n, t.n10, t.n01) == (1000, 15, 6)
    assert t.p_weaker == pytest.approx(binomtest(15, 21, 0.5, alternative="greater").pvalue)
    assert t.p_stronger == pytest.approx(binomtest(15, 21, 0.5, alternative="less").pvalue)
    assert t.p_within == pytest.approx(binomtest(15, 1000, MARGIN, alternative="less").pvalue)
    assert t.p_ok == pytest.approx(min(1.0, 2 * min(t.p_stronger, t.p_within)))
    # Six discordant pairs, all one way: p = 2**-6 exactly.
    assert mcnemar(a, rival(a, 6, 0)).p_weaker == pytest.approx(1 / 64)
    # No discordant pair: neither direction is significant.
    same = mcnemar(a, a)
    assert same.p_weaker == same.p_stronger == 1.0
    with pytest.raises(ValueError, match="shapes"):
        mcnemar(a, a[:, :10])


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([]) == []
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])


def test_inconclusive_is_a_json_and_markdown_safe_status():
    assert "inconclusive" in STATUSES
    check = CheckResult("iterative_vs_single_step", "inconclusive", "cannot tell")
    report = RobustnessReport(
        n_samples=10, repeats=1, clean=[1.0], attacks=[], worst_case=[1.0], checks=[check]
    )
    again = RobustnessReport.from_json(report.to_json())
    assert again.checks == [check]
    assert json.loads(report.to_json())["checks"][0]["status"] == "inconclusive"
    assert "| iterative_vs_single_step | INCONCLUSIVE | cannot tell |" in report.to_markdown()


# -- iterative vs single-step --------------------------------------------------------------------


def test_iterative_weaker_fails():
    check = check_it(1000, 500, n10=40, n01=10)  # pgd correct on 40 samples fgsm fools
    assert check.status == "fail"
    for word in ("pgd", "fgsm", "n10=40", "n01=10", "of 1000 pairs", f"alpha={ALPHA}", "p="):
        assert word in check.message
    assert "significantly weaker" in check.message


def test_iterative_clearly_stronger_passes():
    check = check_it(1000, 300, n10=2, n01=120)
    assert check.status == "pass"
    assert "shown at least as strong" in check.message and "significantly stronger" in check.message
    assert (
        "n10=2" in check.message
        and "n01=120" in check.message
        and "percentage point" in check.message
    )


def test_identical_attacks_pass_only_with_enough_pairs():
    # No discordant pair in 5 x 1000 pairs: weaker by < 1 point is shown (the margin route).
    assert check_it(5000, 2500, 0, 0, repeats=5).status == "pass"
    assert "5 repeats pooled" in check_it(5000, 2500, 0, 0, repeats=5).message
    # ... but agreement on 20 pairs shows nothing.
    assert check_it(20, 10, 0, 0).status == "inconclusive"


@pytest.mark.parametrize(
    "n, correct, n10, n01",
    [
        (10, 6, 1, 2),  # tiny: three discordant pairs
        (1000, 500, 50, 48),  # noisy: many discordant pairs, no clear direction
    ],
)
def test_iterative_tiny_or_noisy_is_inconclusive(n, correct, n10, n01):
    check = check_it(n, correct, n10, n01)
    assert check.status == "inconclusive"
    assert check.message.startswith("not shown")
    assert f"n10={n10}" in check.message and "p(problem)=" in check.message
    assert "p(at least as strong)=" in check.message and "percentage point" in check.message


@pytest.mark.parametrize("repeats, n10, n01", [(1, 36, 30), (5, 240, 210)])
def test_issue_example_pgd_909_vs_fgsm_903_is_not_a_pass(repeats, n10, n01):
    # Issue 10: PGD 90.9% vs FGSM 90.3% on ~1000 samples, with the discordance of a
    # randomized model (a few percent of pairs disagree, in both directions).
    n = 1000 * repeats
    pgd_correct = round(0.909 * n)
    assert pgd_correct - n10 + n01 == round(0.903 * n)
    attacks, outcomes = iterative_case(n, pgd_correct, n10, n01, repeats)
    assert [round(100 * a.mean, 1) for a in attacks] == [90.3, 90.9]
    paired = check_iterative_vs_single_step(attacks, 1000, outcomes)
    assert paired.status == "inconclusive"
    assert "pgd 90.9% vs fgsm 90.3%" in paired.message
    unpaired = check_iterative_vs_single_step(attacks, 1000)
    assert unpaired.status == "inconclusive" and "unpaired" in unpaired.message
    for check in (paired, unpaired):
        assert "not shown" in check.message and "is shown at least as strong" not in check.message


def test_issue_example_with_low_discordance_fails_where_unpaired_saw_noise():
    # The same 0.6-point gap, but pgd never fools a sample fgsm leaves correct: six pairs,
    # all against pgd, p = 1/64. The unpaired comparison cannot see this.
    attacks, outcomes = iterative_case(1000, 909, n10=6, n01=0)
    assert check_iterative_vs_single_step(attacks, 1000, outcomes).status == "fail"
    assert check_iterative_vs_single_step(attacks, 1000).status == "inconclusive"


def test_holm_turns_a_borderline_fail_inconclusive_with_more_comparisons():
    pgd = base(1000, 500)
    fgsm = rival(pgd, 15, 6)  # p = 0.039 < 0.05 alone
    fgsm_big = rival(pgd, 0, 100)  # pgd clearly stronger: p(problem) = 1
    attacks = [
        attack("pgd", "iterative", pgd),
        attack("fgsm", "single-step", fgsm),
        attack("fgsm-big", "single-step", fgsm_big),
    ]
    outcomes = {"pgd": pgd, "fgsm": fgsm, "fgsm-big": fgsm_big}
    alone = check_iterative_vs_single_step(attacks[:2], 1000, outcomes)
    assert alone.status == "fail" and "Holm-adjusted over 1: 0.039" in alone.message
    both = check_iterative_vs_single_step(attacks, 1000, outcomes)
    assert both.status == "inconclusive"
    assert "p(problem)=0.078 Holm-adjusted over 2" in both.message
    assert "fgsm-big" not in both.message  # only the undecided comparison is listed


def test_result_checks_share_one_holm_family_across_checks():
    pgd = base(1000, 500)
    fgsm = rival(pgd, 15, 6)  # borderline, as above
    transfer = rival(pgd, 0, 300)  # far weaker than pgd: p(problem) = 1
    attacks = [
        attack("pgd", "iterative", pgd),
        attack("fgsm", "single-step", fgsm),
        attack("transfer", "transfer", transfer),
    ]
    outcomes = {"pgd": pgd, "fgsm": fgsm, "transfer": transfer}
    # Alone, the iterative check is a family of one and FAILs (p = 0.039); in the report,
    # transfer's claim (both white-box rivals far stronger) joins the Holm family.
    assert check_iterative_vs_single_step(attacks, 1000, outcomes).status == "fail"
    report = RobustnessReport(
        n_samples=1000,
        repeats=1,
        clean=[0.9],
        attacks=attacks,
        worst_case=[0.4],
        randomized=False,
        outcomes=outcomes,
    )
    checks = {c.name: c for c in result_checks(report)}
    assert list(checks) == [
        "iterative_vs_single_step",
        "white_box_vs_black_box",
        "eot_on_randomized",
        "accuracy_falls_with_eps",
    ]
    assert checks["iterative_vs_single_step"].status == "inconclusive"
    assert "Holm-adjusted over 2" in checks["iterative_vs_single_step"].message
    assert checks["white_box_vs_black_box"].status == "pass"
    assert checks["eot_on_randomized"].status == "pass"
    assert checks["accuracy_falls_with_eps"].status == "skip"


# -- white-box vs black-box ----------------------------------------------------------------------


def bb_case(pairs: dict[str, tuple[int, int]]):
    """transfer vs white-box rivals; pairs: rival -> (n10, n01) with n10 = rival correct,
    transfer fooled (against the rival)."""
    transfer = base(1000, 500)
    outcomes = {"transfer": transfer}
    attacks = [attack("transfer", "transfer", transfer)]
    for name, (n10, n01) in pairs.items():
        # rival(transfer, ...) counts from transfer's side: swap the roles.
        outcomes[name] = rival(transfer, n01, n10)
        kind = "iterative" if name.startswith("pgd") else "single-step"
        attacks.append(attack(name, kind, outcomes[name]))
    return attacks, outcomes


def test_black_box_beating_white_box_fails():
    attacks, outcomes = bb_case({"pgd": (80, 5)})
    check = check_white_box_vs_black_box(attacks, 1000, outcomes)
    assert check.status == "fail" and "obfuscated gradients" in check.message
    assert "n10=80 (pgd correct, transfer fooled)" in check.message and "n01=5" in check.message


def test_white_box_clearly_stronger_passes():
    attacks, outcomes = bb_case({"pgd": (3, 150)})
    check = check_white_box_vs_black_box(attacks, 1000, outcomes)
    assert check.status == "pass" and "pgd significantly stronger" in check.message


def test_black_box_tiny_or_noisy_is_inconclusive():
    attacks, outcomes = bb_case({"pgd": (30, 28)})
    assert check_white_box_vs_black_box(attacks, 1000, outcomes).status == "inconclusive"
    small = {k: v[:, :8] for k, v in outcomes.items()}
    small_attacks = [attack(a.name, a.kind, small[a.name]) for a in attacks]
    check = check_white_box_vs_black_box(small_attacks, 8, small)
    assert check.status == "inconclusive" and "of 8 pairs" in check.message


def test_black_box_fails_only_when_it_beats_every_white_box_rival():
    # transfer beats fgsm clearly, but pgd is clearly stronger than transfer: no obfuscation.
    attacks, outcomes = bb_case({"fgsm": (80, 5), "pgd": (3, 150)})
    assert check_white_box_vs_black_box(attacks, 1000, outcomes).status == "pass"
    attacks, outcomes = bb_case({"fgsm": (80, 5), "pgd": (70, 4)})
    check = check_white_box_vs_black_box(attacks, 1000, outcomes)
    assert check.status == "fail" and "fgsm" in check.message and "pgd" in check.message


# -- unpaired fallback ---------------------------------------------------------------------------


def test_unpaired_fallback_says_so():
    attacks, _ = iterative_case(1000, 500, 40, 10)
    for outcomes in (None, {"pgd": base(1000, 500)}):  # none at all / fgsm missing
        check = check_iterative_vs_single_step(attacks, 1000, outcomes)
        assert "unpaired, approximate" in check.message
    report = RobustnessReport(
        n_samples=1000, repeats=1, clean=[0.9], attacks=attacks, worst_case=[0.4]
    )
    loaded = RobustnessReport.from_json(report.to_json())
    assert loaded.outcomes is None
    assert "unpaired, approximate" in result_checks(loaded)[0].message


def test_without_scipy_the_checks_fall_back_to_unpaired(monkeypatch):
    attacks, outcomes = iterative_case(1000, 300, 2, 120)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    check = check_iterative_vs_single_step(attacks, 1000, outcomes)
    assert check.status == "pass"  # a 12-point gap is clear even unpaired
    assert "unpaired, approximate" in check.message and "scipy is not installed" in check.message


# -- evaluate() provides the pairs -------------------------------------------------------------


class Slice(nn.Module):
    """Logits = the first 3 features; feature 3 carries the sample id (ignored)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :3] * 1.0


class Fool:
    """Fools the samples whose id is below ``upto``: moves the one-hot off the label."""

    norm, eps = "linf", EPS

    def __init__(self, name: str, kind: str, upto: int) -> None:
        self.name, self.kind, self.upto = name, kind, upto

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = x.clone()
        hit = x[:, 3] * 1000 < self.upto - 0.5
        x_adv[hit, :3] = x[hit, :3].roll(1, dims=1)
        return x_adv


def test_evaluate_fills_the_outcomes_the_paired_checks_use():
    from fastnoise.eval import evaluate

    n = 400
    y = torch.arange(n) % 3
    x = torch.zeros(n, 4)
    x[torch.arange(n), y] = 1.0
    x[:, 3] = torch.arange(n) / 1000
    attacks = [Fool("pgd", "iterative", 200), Fool("fgsm", "single-step", 100)]
    report = evaluate(
        Slice(),
        (x, y),
        attacks,
        repeats=2,
        progress=False,
        unbounded_attack=Fool("all", "iterative", n),
    )
    assert report.outcomes is not None and report.outcomes["pgd"].shape == (2, n)
    check = report.check("iterative_vs_single_step")
    assert check.status == "pass" and "unpaired" not in check.message
    assert (
        "n10=0" in check.message and "n01=200" in check.message and "of 800 pairs" in check.message
    )
