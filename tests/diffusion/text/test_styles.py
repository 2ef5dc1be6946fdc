"""The WebUI's prompt styles (diffusion.text.styles) against its rules, typed here from its
modules/styles.py (merge_prompts / apply_styles_to_prompt, StyleDatabase.load_from_csv), and
its CSV as the WebUI writes and reads it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from diffusion.text.styles import (
    StyleDatabase,
    StylesError,
    apply_styles,
    merge_prompts,
    unmerge_prompt,
)

pytestmark = pytest.mark.nodevice


def webui_merge_prompts(style_prompt: str, prompt: str) -> str:
    # typed from the WebUI's modules/styles.py
    if "{prompt}" in style_prompt:
        res = style_prompt.replace("{prompt}", prompt)
    else:
        parts = filter(None, (prompt.strip(), style_prompt.strip()))
        res = ", ".join(parts)
    return res


def webui_apply_styles_to_prompt(prompt: str, styles: list[str]) -> str:
    for style in styles:
        prompt = webui_merge_prompts(style, prompt)
    return prompt


CASES = [  # (style texts in order, prompt)
    (["masterpiece, {prompt}, 8k"], "a fox in snow"),
    (["oil painting, thick strokes"], "a fox in snow"),
    (["  oil painting  "], "  a fox  "),
    (["oil painting"], ""),  # an empty prompt: the style alone, no ", "
    (["{prompt}"], ""),
    ([""], "a fox"),  # an empty style (a negative-only style's prompt) leaves the prompt
    (["{prompt} and {prompt}"], "a fox"),  # every {prompt} is replaced
    (["sharp", "photo of {prompt}", "by night"], "a fox"),  # in order, each on the last's
    (["blurry, lowres", "{prompt}, watermark"], "bad hands"),  # negative prompts alike
]


@pytest.mark.parametrize(("styles", "prompt"), CASES)
def test_merging_is_the_webuis(styles: list[str], prompt: str) -> None:
    assert apply_styles(prompt, styles) == webui_apply_styles_to_prompt(prompt, styles)
    assert merge_prompts(styles[0], prompt) == webui_merge_prompts(styles[0], prompt)


def test_literal_results() -> None:
    assert apply_styles("a fox", ["masterpiece, {prompt}", "8k"]) == "masterpiece, a fox, 8k"
    assert apply_styles("", ["oil painting"]) == "oil painting"
    assert apply_styles("a fox", ["oil painting"]) == "a fox, oil painting"


def _write(path: Path, rows: list[list[str]], header: tuple[str, ...] = (
        "name", "prompt", "negative_prompt")) -> Path:
    # as the WebUI saves styles.csv: utf-8-sig, csv's own quoting
    with open(path, "w", encoding="utf-8-sig", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_reads_the_webuis_csv(tmp_path: Path) -> None:
    _write(tmp_path / "styles.csv", [
        ["Cinematic", "cinematic still of {prompt}, film grain", "cartoon, drawing"],
        ["# a comment row", "ignored", ""],
        ["Comma, quoted", '"quoted", text, with commas', ""],
        ["Negative only", "", "blurry"],
    ])
    with open(tmp_path / "styles.csv", "a", encoding="utf-8", newline="") as file:
        file.write('Spaced,  "after the comma"  ,x\n')  # skipinitialspace: the quotes hold
    styles = StyleDatabase([tmp_path / "styles.csv"])
    assert styles.listing() == [
        {"name": "Cinematic", "prompt": "cinematic still of {prompt}, film grain",
         "negative_prompt": "cartoon, drawing"},
        {"name": "Comma, quoted", "prompt": '"quoted", text, with commas',
         "negative_prompt": ""},
        {"name": "Negative only", "prompt": "", "negative_prompt": "blurry"},
        {"name": "Spaced", "prompt": "after the comma  ", "negative_prompt": "x"}]
    assert styles.apply("a fox", "ugly", ["Cinematic", "Negative only"]) == (
        "cinematic still of a fox, film grain", "ugly, cartoon, drawing, blurry")


def test_old_columns_globs_and_overrides(tmp_path: Path) -> None:
    # the old name,text format; a later file's style of the same name wins in its place
    _write(tmp_path / "a.csv", [["One", "first"], ["Two", "second"]], ("name", "text"))
    _write(tmp_path / "b.csv", [["One", "first again", "neg"], ["Three", "third", ""]])
    styles = StyleDatabase([str(tmp_path / "*.csv"), str(tmp_path / "none-*.csv")])
    assert [s["name"] for s in styles.listing()] == ["One", "Two", "Three"]
    assert styles.apply("p", "", ["One"]) == ("p, first again", "neg")


def test_bad_files_and_names_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(StylesError, match="does not exist"):
        StyleDatabase([tmp_path / "missing.csv"])
    _write(tmp_path / "bad.csv", [["x", "y"]], ("title", "body"))
    with pytest.raises(StylesError, match="name,prompt,negative_prompt"):
        StyleDatabase([tmp_path / "bad.csv"])
    (tmp_path / "latin1.csv").write_bytes("name,prompt\ncaf\xe9,x\n".encode("latin-1"))
    with pytest.raises(StylesError, match="cannot read"):
        StyleDatabase([tmp_path / "latin1.csv"])
    styles = StyleDatabase([_write(tmp_path / "s.csv", [["Ink", "ink", ""]])])
    with pytest.raises(StylesError, match="no style named 'Oil'; the styles are: 'Ink'"):
        styles.apply("p", "", ["Ink", "Oil"])


@pytest.mark.parametrize(("style", "prompt", "want"), [
    # the examples of the WebUI's extract_style_text_from_prompt docstring
    ("masterpiece", "1girl, art by greg, masterpiece", "1girl, art by greg"),
    ("masterpiece, {prompt}", "masterpiece, 1girl, art by greg", "1girl, art by greg"),
    ("masterpiece, {prompt}", "exquisite, 1girl, art by greg", None),
    ("{prompt} and {prompt}", "a and a", None),  # two placeholders: not taken apart
])
def test_unmerge(style: str, prompt: str, want: str | None) -> None:
    assert unmerge_prompt(style, prompt) == want


def test_extract_undoes_apply(tmp_path: Path) -> None:
    styles = StyleDatabase([_write(tmp_path / "s.csv", [
        ["Framed", "art of {prompt}, framed", "blurry"], ["Ink", "ink", ""],
        ["Empty", "", ""]])])
    names = ["Framed", "Ink"]
    prompt, negative = styles.apply("a fox", "ugly", names)
    assert styles.extract(prompt, negative) == (names, "a fox", "ugly")
    # the negative prompt must carry a style's negative text too
    assert styles.extract(prompt, "ugly") == (["Ink"], "art of a fox, framed", "ugly")
    assert styles.extract("a fox", "") == ([], "a fox", "")
