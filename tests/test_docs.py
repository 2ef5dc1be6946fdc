"""The documents stand alone (issue 43): README.md is a front page, every relative link in it
and in docs/*.md reaches a file of the repository (and a heading there, for `#anchor` links),
and no text file of the repository names a document that lives outside it (the developers'
own notes, a sibling folder). Host only, no device, no import of the packages.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.nodevice

ROOT = Path(__file__).resolve().parent.parent
FRONT_PAGE_LINES = 400
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# what the text search reads: the project's own files, not .venv, outputs or git's
SEARCHED = ("README.md", "pyproject.toml", "docs", "tests", "diffusion", "gpucore", "gpustd",
            "shaders", "bench", "tools", "scripts", "examples", ".ci")
TEXT_SUFFIXES = {"", ".py", ".md", ".txt", ".toml", ".yaml", ".yml", ".json", ".wgsl", ".sh",
                 ".cfg", ".ini", ".html", ".js", ".css"}
# Names of documents that are not in the repository; each alone, so this file names none whole.
OUTSIDE_NAMES = [name + ".md" for name in ("DESIGN", "STYLE")]
OUTSIDE_PATHS = re.compile(r"(?:\.\./)+shared/|(?<![\w.])/work/|\bshared/(?:DESIGN|STYLE)\.md")
# A file allowed to name an outside document for now, with the work that removes the mention;
# a stale entry (the file no longer names one) fails too, saying so.
KNOWN_MENTIONS: dict[str, str] = {}

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def _prose(path: Path) -> list[str]:
    """The lines of a Markdown file outside its fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every `#anchor` a Markdown file offers (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    for line in _prose(path):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """The relative links of a Markdown file that reach no file under `root` (the repository),
    or no heading of the file they name."""
    broken = []
    for line in _prose(path):
        for match in LINK.finditer(line):
            target = match.group(1) or match.group(2)
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            if not resolved.is_relative_to(root):
                broken.append(f"{target} (outside the repository)")
            elif not resolved.exists():
                broken.append(f"{target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{target} (no heading #{anchor} in {resolved.name})")
    return broken


def _text_files() -> list[Path]:
    files = []
    for name in SEARCHED:
        top = ROOT / name
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            if (path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in
                    path.parts and path.stat().st_size < 4_000_000):
                files.append(path)
    return files


def outside_mentions(path: Path) -> list[str]:
    """What in a text file names a document or path outside the repository."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return []
    found = [m.group(0) for m in OUTSIDE_PATHS.finditer(text)]
    for name in OUTSIDE_NAMES:
        if re.search(rf"(?<![\w/]){re.escape(name)}", text) and not (ROOT / name).exists():
            found.append(name)
    return found


def test_front_page_is_short() -> None:
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines < FRONT_PAGE_LINES, (
        f"README.md has {lines} lines; it is the front page (under {FRONT_PAGE_LINES}): move "
        "the detail into docs/ and link to it")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_reach_files_and_headings(path: Path) -> None:
    assert not broken_links(path), f"{path.relative_to(ROOT)}: broken links {broken_links(path)}"


def test_no_file_names_a_document_outside_the_repository() -> None:
    found = {}
    for path in _text_files():
        if path == Path(__file__).resolve():
            continue
        mentions = outside_mentions(path)
        if mentions:
            found[path.relative_to(ROOT).as_posix()] = mentions
    unexpected = {name: m for name, m in found.items() if name not in KNOWN_MENTIONS}
    assert not unexpected, (
        f"these files name documents outside the repository: {unexpected}; point them at a file "
        "in it (docs/ARCHITECTURE.md, docs/development.md, ...) or drop the reference")
    stale = sorted(set(KNOWN_MENTIONS) - set(found))
    assert not stale, f"KNOWN_MENTIONS lists files that no longer name one: {stale}; delete them"


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """A broken link, a missing heading and an outside path are found (the checks can fail)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A title\n\n## The `serve` command: FLUX.1\n")
    page = docs / "b.md"
    page.write_text("[ok](a.md#the-serve-command-flux1) [gone](missing.md) [bad](a.md#nope)\n"
                    "```\n[in code](ignored.md)\n```\nsee ../shared/gpu/README.md\n")
    assert anchors(docs / "a.md") == {"a-title", "the-serve-command-flux1"}
    assert [b.split()[0] for b in broken_links(page, tmp_path)] == ["missing.md", "a.md#nope"]
    assert broken_links(page, docs / "a.md")[0].endswith("(outside the repository)")
    assert outside_mentions(page) == ["../shared/"]
