"""The X/Y/Z plot's axis values as the WebUI reads them: comma-separated (CSV quoting),
integer ranges `1-5`, `1-9 (+2)`, `1-10 [4]` (a count, spaced evenly) and their float forms."""

from __future__ import annotations

import csv
import math
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


def _counted(value: str, count: int, limit: int | None) -> None:
    """ValueError when the range `value` stands for more than `limit` values (checked before
    they are made: "1-1000000000" would take the server's memory)."""
    if limit is not None and count > limit:
        raise ValueError(f"{value!r} makes {count:,} values, over this server's limit of "
                         f"{limit}; send a shorter range or a larger step")


def _step(value: str, text: str | None) -> float:
    size = float(text or 1)
    if size == 0:
        raise ValueError(f"{value!r} has a step of 0; send a step such as (+1) or (-1)")
    return size


def typed_values(values: list[str], kind: str, limit: int | None = None) -> list[Any]:
    """`values` expanded (ranges) and converted to `kind` ("int", "float" or "str"; "order":
    every order of the values); ValueError names the value that is not a number, a range
    with a step of 0, and (with `limit`) a range or an order of more values than `limit`."""
    if kind == "order":
        _counted(", ".join(values), math.factorial(len(values)), limit)
        return list(permutations(values))
    out: list[Any] = []
    for value in values:
        if kind == "int":
            step, count = RANGE.fullmatch(value), RANGE_COUNT.fullmatch(value)
            if step is not None:
                start, end = _number(int, step.group(1)), _number(int, step.group(2))
                span = range(start, end + 1, int(_step(value, step.group(3))))
                _counted(value, len(span), limit)
                out += span
                continue
            if count is not None:
                start, end = _number(int, count.group(1)), _number(int, count.group(2))
                num = int(count.group(3) or 1)
                _counted(value, num, limit)
                out += [int(v) for v in np.linspace(start, end, num).tolist()]
                continue
        elif kind == "float":
            step, count = RANGE_FLOAT.fullmatch(value), RANGE_COUNT_FLOAT.fullmatch(value)
            if step is not None:
                start, end = _number(float, step.group(1)), _number(float, step.group(2))
                size = _step(value, step.group(3))
                _counted(value, max(0, math.ceil((end + size - start) / size)), limit)
                out += np.arange(start, end + size, size).tolist()
                continue
            if count is not None:
                start, end = _number(float, count.group(1)), _number(float, count.group(2))
                num = int(count.group(3) or 1)
                _counted(value, num, limit)
                out += np.linspace(start, end, num).tolist()
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
