"""The robustness report: per-attack accuracies over repeats, self-checks, sweeps.

Accuracies are stored as fractions in [0, 1], one value per repeat, and shown in percent
as mean ± std. Unbounded attacks (eps = inf: minimum-norm CW, the few-pixel L0 attack) are
listed but kept out of the effective robustness and the per-sample worst case when a
bounded attack is present: no budget contains them, so they would set every figure to
whatever their own threat model allows.

The std is the sample std over repeats (ddof=1; 0 for a single repeat): the defenses are
random, so every repeat redraws the noise and reruns the attacks.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "AttackResult",
    "CheckResult",
    "SweepResult",
    "RobustnessReport",
    "mean_std",
    "format_eps",
    "on_255_grid",
    "STATUSES",
]

# "pass": the check's claim is shown; "fail": the problem is shown; "inconclusive": the
# data show neither (e.g. two attacks too close to tell apart on this many samples; see
# fastnoise.eval.checks). "info" carries a finding that is neither good nor bad (e.g. "this
# model is randomized"); "skip" marks a check that had nothing to compare.
STATUSES = ("pass", "warn", "fail", "inconclusive", "info", "skip")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0.0 for fewer than two values)."""
    if len(values) == 0:
        raise ValueError("values must not be empty")
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def on_255_grid(eps: float) -> bool:
    """True for whole multiples of 1/255 (one 8-bit pixel level), e.g. 8/255."""
    return math.isfinite(eps) and eps > 0 and abs(eps * 255 - round(eps * 255)) < 1e-6


def format_eps(eps: float, norm: str = "linf") -> str:
    """``8/255`` for L-inf budgets on the 1/255 grid, plain numbers otherwise (``0.3``),
    ``–`` for inf."""
    if math.isinf(eps):
        return "–"
    if norm == "linf" and on_255_grid(eps):
        return f"{round(eps * 255)}/255"
    label = f"{eps:.4g}"
    return label if norm == "linf" else f"{label} ({norm.upper()})"


_DRAWS_LEGEND = [
    "One draw: the expected accuracy of the randomized model on a single forward (each "
    "sample's clean and attacked inputs judged on the same draw). Majority: the class most "
    "draws predict, as a deployment that votes would answer. Correct in all: robust against "
    "an attacker allowed that many tries, who wins if any draw is wrong.",
]


def _pct_or_dash(values: Sequence[float] | None) -> str:
    return "–" if not values else _pct(values)


def _setting_text(value: Any) -> str:
    if isinstance(value, float):  # budgets on the pixel grid as k/255, others plainly
        return format_eps(value) if on_255_grid(value) and value < 1 else f"{value:.6g}"
    if isinstance(value, list):
        return "(" + ", ".join(_setting_text(v) for v in value) + ")"
    return str(value)


def _pct(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _mean_std_dict(values: Sequence[float]) -> dict[str, float]:
    mean, std = mean_std(values)
    return {"mean": mean, "std": std}


def _encode_float(x: float) -> float | str:
    # JSON has no inf; keep the file strict so any parser can read it.
    return "inf" if math.isinf(x) else x


def _decode_float(x: float | str) -> float:
    return float(x)


_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _encode_setting(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_encode_setting(v) for v in value]
    return value


def _decode_setting(value: Any) -> Any:
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    if isinstance(value, list):
        return [_decode_setting(v) for v in value]
    return value


@dataclass
class AttackResult:
    """Robust accuracy of one attack, one fraction per repeat."""

    name: str
    eps: float
    norm: str
    kind: str
    accuracies: list[float]
    eot: int = 1
    # Everything needed to rerun it (attack_settings in evaluate.py), and what it spent
    # over all repeats: forward passes of the model, rows (samples x copies) and seconds.
    settings: dict[str, Any] = field(default_factory=dict)
    forward_passes: int = 0
    forward_rows: int = 0
    seconds: float = 0.0
    # With k > 1 judging draws: majority vote over them, and correct in every one.
    majority: list[float] | None = None
    all_draws: list[float] | None = None
    # Samples it ran on when not the report's (a protocol's random subset, e.g. PNIL's
    # SPSA on 1000 images); such an attack stays out of the per-sample worst case.
    n_samples: int | None = None

    @property
    def bounded(self) -> bool:
        return not math.isinf(self.eps)

    @property
    def mean(self) -> float:
        return mean_std(self.accuracies)[0]

    @property
    def std(self) -> float:
        return mean_std(self.accuracies)[1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eps"] = _encode_float(self.eps)
        d["settings"] = {k: _encode_setting(v) for k, v in self.settings.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttackResult:
        settings = {k: _decode_setting(v) for k, v in d.get("settings", {}).items()}
        return cls(**{**d, "eps": _decode_float(d["eps"]), "settings": settings})


@dataclass
class CheckResult:
    """One named self-check: status in ``STATUSES`` and a one-line explanation."""

    name: str
    status: str
    message: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


@dataclass
class SweepResult:
    """Accuracy of one attack (or one model under one attack) as the budget grows."""

    label: str
    norm: str
    eps_values: list[float]
    accuracies: list[list[float]]  # [eps index][repeat]
    n_samples: int = 0

    @property
    def means(self) -> list[float]:
        return [mean_std(a)[0] for a in self.accuracies]

    @property
    def stds(self) -> list[float]:
        return [mean_std(a)[1] for a in self.accuracies]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eps_values"] = [_encode_float(e) for e in self.eps_values]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepResult:
        return cls(**{**d, "eps_values": [_decode_float(e) for e in d["eps_values"]]})


@dataclass
class RobustnessReport:
    """Everything :func:`fastnoise.eval.evaluate` measured, printable and savable."""

    n_samples: int
    repeats: int
    clean: list[float]
    attacks: list[AttackResult]
    # Per repeat: fraction of samples classified correctly clean AND under every attack
    # (every bounded attack, when there is one).
    worst_case: list[float]
    randomized: bool | None = None
    checks: list[CheckResult] = field(default_factory=list)
    sweeps: list[SweepResult] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    # Noise draws each prediction was judged on (evaluate(draws=k)); with k > 1 the clean
    # and worst-case figures also as a majority vote and as correct in every draw.
    draws: int = 1
    clean_majority: list[float] | None = None
    clean_all_draws: list[float] | None = None
    worst_case_all_draws: list[float] | None = None
    # Per-sample outcomes for the paired self-checks, in memory only (not in the JSON):
    # "clean" and each attack's name -> a bool tensor (repeats, n_samples), True where the
    # sample was classified correctly. Every outcome of one sample in one repeat is judged
    # on the same noise draw, so two attacks' outcomes are paired. None for a loaded report.
    outcomes: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def effective(self) -> AttackResult | None:
        """The strongest attack (lowest mean accuracy): the effective robustness.
        Only bounded attacks compete when there is one (see the module docstring)."""
        pool = [a for a in self.attacks if a.bounded] or self.attacks
        return min(pool, key=lambda a: a.mean) if pool else None

    def attack(self, name: str) -> AttackResult:
        for result in self.attacks:
            if result.name == name:
                return result
        raise KeyError(f"no attack named {name!r}; have {[a.name for a in self.attacks]}")

    def check(self, name: str) -> CheckResult:
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(f"no check named {name!r}; have {[c.name for c in self.checks]}")

    def add_sweep(self, sweep: SweepResult) -> None:
        """Attach a sweep and refresh the checks that read sweeps."""
        from fastnoise.eval.checks import check_eps_sweeps

        self.sweeps.append(sweep)
        refreshed = check_eps_sweeps(self.sweeps)
        self.checks = [c for c in self.checks if c.name != refreshed.name] + [refreshed]

    # -- Markdown ---------------------------------------------------------------------------

    def to_markdown(self) -> str:
        k = self.draws
        several = k > 1
        lines = [
            f"Robust accuracy on {self.n_samples} samples, mean ± std over {self.repeats} "
            f"repeat(s). Randomized model: {_yes_no(self.randomized)}. Every prediction for "
            f"one sample is judged on the same noise ({k} draw{'s' if several else ''}).",
            "",
        ]
        if several:
            lines += [
                f"| Attack | eps | Accuracy, one draw (%) | Majority of {k} (%) "
                f"| Correct in all {k} (%) |",
                "|---|---|---|---|---|",
            ]
        else:
            lines += ["| Attack | eps | Accuracy (%) |", "|---|---|---|"]

        def row(label: str, eps: str, one: list[float], majority, every, bold=False) -> str:
            cells = [_pct(one)] + ([_pct_or_dash(majority), _pct_or_dash(every)] if several else [])
            if bold:
                cells[0] = f"**{cells[0]}**"
            return f"| {label} | {eps} | " + " | ".join(cells) + " |"

        lines.append(row("Clean", "–", self.clean, self.clean_majority, self.clean_all_draws))
        for a in self.attacks:
            eot = f" (EOT×{a.eot})" if a.eot > 1 else ""
            subset = f" (on {a.n_samples} images)" if a.n_samples is not None else ""
            eps = format_eps(a.eps, a.norm)
            label = f"{a.name}{eot}{subset}"
            lines.append(row(label, eps, a.accuracies, a.majority, a.all_draws))
        best = self.effective
        if best is not None:
            label = f"**Effective robustness** (min over attacks: {best.name})"
            eps = format_eps(best.eps, best.norm)
            lines.append(row(label, eps, best.accuracies, best.majority, best.all_draws, True))
            which = "all attacks" if all(a.bounded for a in self.attacks) else "bounded attacks"
            label = f"Per-sample worst case ({which})"
            lines.append(row(label, "–", self.worst_case, None, self.worst_case_all_draws))
        if several:
            lines += ["", *_DRAWS_LEGEND]
        lines += ["", *self._settings_markdown()]
        if self.sweeps:
            lines += ["", *self._sweep_markdown()]
        if self.checks:
            lines += ["", "| Check | Status | Explanation |", "|---|---|---|"]
            lines += [f"| {c.name} | {c.status.upper()} | {c.message} |" for c in self.checks]
        return "\n".join(lines) + "\n"

    def _settings_markdown(self) -> list[str]:
        """Each attack's settings and cost, so a number can be rerun from the report."""
        lines = ["| Attack | Settings | Forward passes (rows) | Seconds |", "|---|---|---|---|"]
        for a in self.attacks:
            shown = ", ".join(f"{k}={_setting_text(v)}" for k, v in a.settings.items()) or "–"
            lines.append(
                f"| {a.name} | {shown} | {a.forward_passes} ({a.forward_rows}) | {a.seconds:.1f} |"
            )
        return lines

    def _sweep_markdown(self) -> list[str]:
        lines = []
        for s in self.sweeps:
            head = " | ".join(format_eps(e, s.norm) if e > 0 else "0" for e in s.eps_values)
            cells = " | ".join(_pct(a) for a in s.accuracies)
            lines += [
                f"| {s.label}: eps | {head} |",
                "|---" * (len(s.eps_values) + 1) + "|",
                f"| Accuracy (%) | {cells} |",
                "",
            ]
        return lines[:-1]

    # -- JSON -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_samples": self.n_samples,
            "repeats": self.repeats,
            "clean": list(self.clean),
            "attacks": [a.to_dict() for a in self.attacks],
            "worst_case": list(self.worst_case),
            "randomized": self.randomized,
            "checks": [asdict(c) for c in self.checks],
            "sweeps": [s.to_dict() for s in self.sweeps],
            "meta": dict(self.meta),
            "draws": self.draws,
            "clean_majority": self.clean_majority,
            "clean_all_draws": self.clean_all_draws,
            "worst_case_all_draws": self.worst_case_all_draws,
            # Derived numbers, for readers of the file; ignored by from_dict.
            "summary": self._summary(),
        }

    def _summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"clean": _mean_std_dict(self.clean)}
        best = self.effective
        if best is not None:
            summary["effective"] = {"attack": best.name, "mean": best.mean, "std": best.std}
            summary["worst_case"] = _mean_std_dict(self.worst_case)
        return summary

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RobustnessReport:
        return cls(
            n_samples=d["n_samples"],
            repeats=d["repeats"],
            clean=list(d["clean"]),
            attacks=[AttackResult.from_dict(a) for a in d["attacks"]],
            worst_case=list(d["worst_case"]),
            randomized=d.get("randomized"),
            checks=[CheckResult(**c) for c in d.get("checks", [])],
            sweeps=[SweepResult.from_dict(s) for s in d.get("sweeps", [])],
            meta=dict(d.get("meta", {})),
            draws=int(d.get("draws", 1)),
            clean_majority=d.get("clean_majority"),
            clean_all_draws=d.get("clean_all_draws"),
            worst_case_all_draws=d.get("worst_case_all_draws"),
        )

    @classmethod
    def from_json(cls, text: str) -> RobustnessReport:
        return cls.from_dict(json.loads(text))

    def save(self, folder: str | os.PathLike[str]) -> dict[str, str]:
        """Write report.md, report.json and the PNG plots into ``folder``; return the paths."""
        from fastnoise.eval.plots import plot_accuracy_vs_eps, plot_attack_accuracy

        os.makedirs(folder, exist_ok=True)
        paths = {
            "markdown": os.path.join(folder, "report.md"),
            "json": os.path.join(folder, "report.json"),
        }
        with open(paths["markdown"], "w", encoding="utf-8") as f:
            f.write(self.to_markdown())
        with open(paths["json"], "w", encoding="utf-8") as f:
            f.write(self.to_json() + "\n")
        if self.attacks:
            paths["bars"] = os.path.join(folder, "accuracy_by_attack.png")
            plot_attack_accuracy(self, paths["bars"])
        if self.sweeps:
            paths["sweep"] = os.path.join(folder, "accuracy_vs_eps.png")
            plot_accuracy_vs_eps(self.sweeps, paths["sweep"])
        return paths


def _yes_no(flag: bool | None) -> str:
    return "not checked" if flag is None else ("yes (use EOT attacks)" if flag else "no")
