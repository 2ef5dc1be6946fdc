"""The X/Y/Z plot's axis values as the WebUI reads them: comma-separated (CSV quoting),
integer ranges `1-5`, `1-9 (+2)`, `1-10 [4]` (a count, spaced evenly) and their float forms."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from io import StringIO
from itertools import permutations
from typing import Any

import numpy as np

__all__ = ["split_values", "typed_values"]

_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*\d+(?:.\d*)?"
RANGE = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\(([+-]\d+)\s*\))?\s*")
RANGE_COUNT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\[(\d+)\s*])?\s*")
RANGE_FLOAT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*")
RANGE_COUNT_FLOAT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\[(\d+(?:.\d*)?)\s*])?\s*")


def split_values(text: str, *, raw_lines: bool = False) -> list[str]:
    """The values of one axis's text: CSV fields, stripped (`raw_lines` and a newline: one
    value per line, as the WebUI's "Use raw text lines")."""
    if raw_lines and "\n" in text.strip():
        return text.strip().split("\n")
    return [field.strip() for row in csv.reader(StringIO(text)) for field in row]


def _number(kind: Callable[[str], Any], text: str) -> Any:
    return kind(text.replace(" ", ""))


def typed_values(values: list[str], kind: str) -> list[Any]:
    """`values` expanded (ranges) and converted to `kind` ("int", "float" or "str"; "order":
    every order of the values); ValueError names the value that is not a number."""
    if kind == "order":
        return list(permutations(values))
    out: list[Any] = []
    for value in values:
        if kind == "int":
            step, count = RANGE.fullmatch(value), RANGE_COUNT.fullmatch(value)
            if step is not None:
                start, end = _number(int, step.group(1)), _number(int, step.group(2))
                out += range(start, end + 1, int(step.group(3) or 1))
                continue
            if count is not None:
                start, end = _number(int, count.group(1)), _number(int, count.group(2))
                num = int(count.group(3) or 1)
                out += [int(v) for v in np.linspace(start, end, num).tolist()]
                continue
        elif kind == "float":
            step, count = RANGE_FLOAT.fullmatch(value), RANGE_COUNT_FLOAT.fullmatch(value)
            if step is not None:
                start, end = _number(float, step.group(1)), _number(float, step.group(2))
                size = float(step.group(3) or 1)
                out += np.arange(start, end + size, size).tolist()
                continue
            if count is not None:
                start, end = _number(float, count.group(1)), _number(float, count.group(2))
                out += np.linspace(start, end, int(count.group(3) or 1)).tolist()
                continue
        out.append(value)
    if kind == "str":
        return out
    convert = int if kind == "int" else float
    typed = []
    for value in out:
        try:
            typed.append(convert(value))
        except (TypeError, ValueError):
            what = "a whole number" if kind == "int" else "a number"
            raise ValueError(f"{value!r} is not {what}") from None
    return typed
