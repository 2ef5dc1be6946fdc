"""The checks GenerationRequest's settings share (diffusion.pipelines.request): a whole
number in a range, a finite number in an interval, each refused in one line naming the
setting."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

__all__ = ["number", "whole"]


def whole(name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> None:
    """ValueError in one line unless `value` is a whole number (not a bool) in [low, high]."""
    # int(): exact for an Integral, and what the comparison needs to type-check (numbers'
    # ABCs declare no reflected comparisons, so mypy cannot see low <= value)
    if isinstance(value, bool) or not isinstance(value, Integral) \
            or not low <= int(value) <= high:
        where = f" from {low:g} to {high:g}" if high < math.inf else (
            f" >= {low:g}" if low > -math.inf else "")
        raise ValueError(f"{name} must be a whole number{where}, got {value!r}")


def number(name: str, value: Any, low: float, high: float, *, open_low: bool = False,
           open_high: bool = False) -> None:
    """ValueError in one line unless `value` is a finite real number (not a bool) in [low,
    high] (`open_low`, `open_high`: the ends excluded)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if open_low else value >= low) and (
            value < high if open_high else value <= high)
    if not ok:
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
