"""The WebUI's prompt styles: `styles.csv` files and how a style joins a prompt.

A style is a row `name,prompt,negative_prompt` of a CSV file (the WebUI's format, read as it
reads it: UTF-8 with or without a BOM, spaces after a comma skipped, rows whose name starts
with `#` left out, the old `name,text` column name taken for `prompt`). A style's text that
holds `{prompt}` has the prompt put in its place; any other is appended after ", " (an empty
side is left out). Several styles apply in order, each to the prompt the last one made.

    >>> merge_prompts("masterpiece, {prompt}, 8k", "a fox")
    'masterpiece, a fox, 8k'
    >>> merge_prompts("oil painting", "a fox")
    'a fox, oil painting'
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PromptStyle", "StyleDatabase", "StylesError", "apply_styles", "merge_prompts",
           "unmerge_prompt"]


class StylesError(ValueError):
    """A styles file that cannot be read, or a style name that no file has."""


@dataclass(frozen=True)
class PromptStyle:
    """One row of a styles file."""

    name: str
    prompt: str
    negative_prompt: str


def merge_prompts(style_prompt: str, prompt: str) -> str:
    """`prompt` with one style's text: in place of `{prompt}`, else after ", "."""
    if "{prompt}" in style_prompt:
        return style_prompt.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


def apply_styles(prompt: str, style_prompts: Iterable[str]) -> str:
    """`prompt` with each style text merged in turn (merge_prompts)."""
    for style_prompt in style_prompts:
        prompt = merge_prompts(style_prompt, prompt)
    return prompt


def unmerge_prompt(style_prompt: str, prompt: str) -> str | None:
    """`prompt` without one style's text (merge_prompts undone, as the WebUI's PNG info
    undoes it: a `{prompt}` style's text around the prompt, another's at its end), or None
    where the prompt does not carry it."""
    prompt, style_prompt = prompt.strip(), style_prompt.strip()
    if "{prompt}" in style_prompt:
        parts = style_prompt.split("{prompt}")
        if len(parts) != 2 or not (prompt.startswith(parts[0]) and prompt.endswith(parts[1])):
            return None
        return prompt[len(parts[0]):len(prompt) - len(parts[1])]
    if not prompt.endswith(style_prompt):
        return None
    prompt = prompt[:len(prompt) - len(style_prompt)]
    return prompt[:-2] if prompt.endswith(", ") else prompt


def _read(path: Path) -> list[PromptStyle]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            reader = csv.DictReader(file, skipinitialspace=True)
            columns = reader.fieldnames or []
            if "name" not in columns or not {"prompt", "text"} & set(columns):
                raise StylesError(f"styles file {str(path)!r} has columns {columns}; its first "
                                  "line must be name,prompt,negative_prompt (the WebUI's)")
            text = "prompt" if "prompt" in columns else "text"
            return [PromptStyle(row["name"], row[text] or "", row.get("negative_prompt") or "")
                    for row in reader if row["name"] and not row["name"].startswith("#")]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise StylesError(f"cannot read styles file {str(path)!r}: {exc}") from None


def _files(patterns: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The files `patterns` name: a name with * or ? in its last part is a glob (matching
    nothing is fine), any other must exist."""
    found: list[Path] = []
    for pattern in map(str, patterns):
        if "*" in os.path.basename(pattern) or "?" in os.path.basename(pattern):
            found += [Path(match) for match in sorted(glob.glob(pattern))]
        elif not Path(pattern).is_file():
            raise StylesError(f"styles file {pattern!r} does not exist; give a CSV file with "
                              "the columns name,prompt,negative_prompt (the WebUI's styles.csv)")
        else:
            found.append(Path(pattern))
    return list(dict.fromkeys(found))


class StyleDatabase:
    """The styles of some CSV files, by name (a later row of the same name replaces an
    earlier one in its place, as in the WebUI)."""

    def __init__(self, patterns: Sequence[str | os.PathLike[str]] = ()) -> None:
        self.files = _files(patterns)
        self.styles: dict[str, PromptStyle] = {}
        for path in self.files:
            for style in _read(path):
                self.styles[style.name] = style

    def listing(self) -> list[dict[str, str]]:
        """/sdapi/v1/prompt-styles' answer: [{name, prompt, negative_prompt}]."""
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
                for s in self.styles.values()]

    def check(self, names: Iterable[str], setting: str = "styles") -> list[PromptStyle]:
        """The styles `names` names, or StylesError naming the unknown and the known ones."""
        names = list(names)
        unknown = [name for name in names if name not in self.styles]
        if unknown:
            known = ", ".join(map(repr, self.styles)) or "none (give a styles.csv)"
            raise StylesError(f"{setting}: no style named {', '.join(map(repr, unknown))}; "
                              f"the styles are: {known}")
        return [self.styles[name] for name in names]

    def extract(self, prompt: str, negative_prompt: str) -> tuple[list[str], str, str]:
        """(style names, prompt, negative prompt): the styles whose text both prompts end in
        (or, with `{prompt}`, are wrapped in) taken out again, the last applied first, as the
        WebUI's PNG info finds them; ([], prompt, negative_prompt) where none is."""
        found: list[str] = []
        left = [s for s in self.styles.values() if s.prompt or s.negative_prompt]
        while True:
            for style in left:
                positive = unmerge_prompt(style.prompt, prompt)
                negative = unmerge_prompt(style.negative_prompt, negative_prompt)
                if positive is not None and negative is not None:
                    prompt, negative_prompt = positive, negative
                    found.insert(0, style.name)
                    left.remove(style)
                    break
            else:
                return found, prompt, negative_prompt

    def apply(self, prompt: str, negative_prompt: str, names: Iterable[str],
              setting: str = "styles") -> tuple[str, str]:
        """(prompt, negative prompt) with the styles `names` applied in order, as the WebUI's
        processing applies a request's styles; StylesError for an unknown name."""
        chosen = self.check(names, setting)
        return (apply_styles(prompt, (s.prompt for s in chosen)),
                apply_styles(negative_prompt, (s.negative_prompt for s in chosen)))
