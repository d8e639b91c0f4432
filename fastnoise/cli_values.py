"""Value parsers and formatters shared by ``fastnoise train`` and ``fastnoise eval``.

One parser for budgets, so ``--eps 8/255`` means the same thing in both commands.
"""

from __future__ import annotations

import argparse
import math
from fractions import Fraction

__all__ = ["format_fraction", "parse_fraction", "parse_fraction_list"]


def parse_fraction(text: str) -> float:
    """``"8/255"`` -> 0.0313..., ``"0.03"`` -> 0.03, ``"inf"`` -> inf; never negative."""
    part = text.strip()
    try:
        value = float(part) if part.lower() in ("inf", "infinity") else float(Fraction(part))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a number or a fraction like 8/255, got {part!r}"
        ) from None
    if value < 0 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {part!r}")
    return value


parse_fraction.__name__ = "fraction"  # argparse names the type in its messages


def parse_fraction_list(text: str) -> list[float]:
    """``"2/255,8/255"`` -> two values (comma-separated :func:`parse_fraction`)."""
    return [parse_fraction(part) for part in text.split(",")]


def format_fraction(value: float) -> str:
    """0.0313... -> ``"8/255"`` where the value is a whole number of 1/255 steps."""
    if isinstance(value, float) and 0 < value < 1:
        steps = value * 255
        if abs(steps - round(steps)) < 1e-9:
            return f"{round(steps)}/255"
    return repr(value)
