"""Robustness evaluation: accuracy under attack over repeats, self-checks, report, plots.

``evaluate(model, loader, attacks, repeats=5)`` returns a :class:`RobustnessReport`
(Markdown, JSON, ``save(folder)``); ``sweep_eps`` gives accuracy-vs-eps curves.
"""

from fastnoise.eval.autoattack import AutoAttackReport, autoattack
from fastnoise.eval.checks import (
    check_eot_on_randomized,
    check_eps_sweeps,
    check_gradients,
    check_iterative_vs_single_step,
    check_randomized,
    check_unbounded_attack,
    check_white_box_vs_black_box,
    is_randomized,
    model_checks,
    noise_margin,
    result_checks,
)
from fastnoise.eval.evaluate import AttackLike, evaluate, sweep_eps
from fastnoise.eval.plots import plot_accuracy_vs_eps, plot_attack_accuracy
from fastnoise.eval.protocols import PROTOCOLS, get_protocol
from fastnoise.eval.report import (
    AttackResult,
    CheckResult,
    RobustnessReport,
    SweepResult,
    format_eps,
    mean_std,
)

__all__ = [
    "AttackLike",
    "AutoAttackReport",
    "PROTOCOLS",
    "autoattack",
    "get_protocol",
    "AttackResult",
    "CheckResult",
    "RobustnessReport",
    "SweepResult",
    "evaluate",
    "sweep_eps",
    "format_eps",
    "mean_std",
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
    "plot_accuracy_vs_eps",
    "plot_attack_accuracy",
]
