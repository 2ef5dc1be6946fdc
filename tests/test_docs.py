"""The documents stand alone (issue 43): README.md is a front page, every relative link in it
and in docs/*.md reaches a file of the repository (and a heading there, for `#anchor` links),
every repository path and module (`gpustd.nn.int8_linear`, `diffusion.load_pipeline`) they
name exists (read from the files, not imported), and no text file of the repository names a
document that lives outside it (the developers' own notes, a sibling folder). The documents' and
`--help` examples' `python -m diffusion` command lines parse with the CLI's own parser (every
option they use exists for that command and takes what they give it). Host only, no device:
of the packages only the CLI's parser is imported (about a second).
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
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

# a path of the repository named in a document: a top folder, then what follows
REPO_PATH = re.compile(r"(?<![\w/.~-])(?:tests|diffusion|gpucore|gpustd|bench|tools|scripts|"
                       r"examples|shaders|docs)/[\w./*-]*[\w*]")
# a module of the packages, or a name in one: diffusion.pipelines.control_spec, gpucore.devices
DOTTED = re.compile(r"(?<![\w.-])(?:diffusion|gpucore|gpustd|bench|tools)(?:\.[a-z_][a-z_0-9]*)+\b")
# the project's own environment variables (others', such as OMP_NUM_THREADS, are not checked)
ENV_VAR = re.compile(r"\b(?:GPUCORE|GPUSTD|AVX|BENCH)_[A-Z0-9_]*[A-Z0-9]\b")
# `python -m diffusion SUB ...`, or a bare `SUB --...` (README's table of first commands)
COMMAND = re.compile(r"(?:python -m diffusion |^)(txt2img|img2img|inpaint|txt2vid|img2vid|"
                     r"png-info|serve|quantize|convert|upscale|cache)(?=\s|$)(.*)")
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


def missing_paths(path: Path, root: Path = ROOT) -> list[str]:
    """The repository paths a document names (`tests/...`, `diffusion/...`, a glob) that match
    nothing under `root`; a module's path may leave out its `.py`."""
    missing = []
    for name in dict.fromkeys(REPO_PATH.findall(path.read_text(encoding="utf-8"))):
        found = (any(root.glob(name)) if "*" in name else
                 (root / name).exists() or (root / f"{name}.py").exists())
        if not found:
            missing.append(name)
    return missing


def _defines(module: Path, name: str) -> bool:
    """Whether a module file defines or imports `name` at its top level (read, not imported)."""
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found = {node.name}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            found = {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            if "__all__" in found:  # a package's lazy exports (its __getattr__) are listed there
                found |= {n.value for n in ast.walk(node.value) if isinstance(n, ast.Constant)}
        else:
            continue
        if name in found:
            return True
    return False


def unknown_names(path: Path, root: Path = ROOT) -> list[str]:
    """The dotted names of the packages a document gives (`gpustd.nn.int8_linear`,
    `diffusion.load_pipeline`) that are no module of the tree and no top-level name of one."""
    unknown = []
    for dotted in dict.fromkeys(DOTTED.findall(path.read_text(encoding="utf-8"))):
        place, parts = root, dotted.split(".")
        while parts and (place / parts[0]).is_dir():
            place = place / parts.pop(0)
        if parts and (place / f"{parts[0]}.py").exists():
            place = place / f"{parts.pop(0)}.py"
        module = place / "__init__.py" if place.is_dir() else place
        if parts and not (module.exists() and _defines(module, parts[0])):
            unknown.append(dotted)
    return unknown


def _parser() -> argparse.ArgumentParser:
    from diffusion.cli.main import build_parser

    return build_parser()


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a.choices for a in parser._actions  # argparse has no API for its sub-commands
                if isinstance(a, argparse._SubParsersAction))


def doc_commands(text: str) -> list[tuple[str, bool]]:
    """The `python -m diffusion` command lines of a Markdown text, each with whether it is
    meant to be pasted whole (a fenced block's, continuation lines joined) or is an inline
    `code` span (which may name an option without its value: only the names are checked)."""
    found, fenced, line_so_far = [], False, ""
    for line in text.splitlines():
        if FENCE.match(line):
            fenced, line_so_far = not fenced, ""
        elif fenced:
            line_so_far += line.removesuffix("\\") + " "
            if not line.endswith("\\"):
                if "python -m diffusion " in line_so_far:
                    found.append((line_so_far, True))
                line_so_far = ""
        else:
            found.extend((span, False) for span in re.findall(r"`([^`]+)`", line))
    return [(f"{m.group(1)} {m.group(2)}", whole) for text, whole in found
            for m in [COMMAND.search(text)] if m and (m.start() == 0 or "python -m" in text)]


def command_problems(command: str, whole: bool, parser: argparse.ArgumentParser) -> list[str]:
    """What is wrong with one command line (`SUB ARGS...`): options its sub-command does not
    have and, for one meant to be pasted, argparse's complaint."""
    words = []
    for word in shlex.split(command, comments=True):
        if word in ("|", "&&", ";", ">"):
            break
        if word not in ("...", "\u2026"):
            words.append(word)
    options = {o for a in _commands(parser)[words[0]]._actions for o in a.option_strings}
    problems = [f"{words[0]} has no {word.split('=')[0]}" for word in words[1:]
                if re.match(r"--?[a-zA-Z]", word) and word.split("=")[0] not in options]
    if whole and not problems:
        try:
            parser.parse_args(words)
        except Exception as error:  # the CLI's parser raises instead of exiting
            problems.append(f"{' '.join(words)[:80]}: {error}")
    return problems


def _help_examples(parser: argparse.ArgumentParser) -> list[str]:
    """The command lines of the sub-commands' --help examples (their epilogs)."""
    text = "\n".join(dict.fromkeys(sub.epilog or "" for sub in _commands(parser).values()))
    return [command for command, _ in doc_commands(f"```\n{text}\n```")]


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
    page.write_text("see `tests/test_gone.py`, tests/support.py and `bench/results/*.json`\n"
                    "```sh\npython -m diffusion txt2img --prompt x \\\n    --stpes 3\n"
                    "python -m diffusion txt2vid --prompt x  # no --model\n```\n"
                    "`serve --devices` `img2img --no-such`\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "support.py").write_text("")
    assert missing_paths(page, tmp_path) == ["tests/test_gone.py", "bench/results/*.json"]
    parser = _parser()
    problems = [command_problems(c, whole, parser) for c, whole in doc_commands(page.read_text())]
    assert problems[0] == ["txt2img has no --stpes"]
    assert "required: --model" in problems[1][0] and problems[2] == []
    assert problems[3] == ["img2img has no --no-such"]
    assert len(_help_examples(parser)) >= 10
    (tmp_path / "gpustd" / "nn").mkdir(parents=True)
    (tmp_path / "gpustd" / "__init__.py").write_text(
        "from .nn import relu as act\nX: int = 1\n__all__ = ['act', 'lazy']\n")
    (tmp_path / "gpustd" / "nn" / "conv.py").write_text("def conv2d(x):\n    return x\n")
    page.write_text("gpustd.act, gpustd.X, gpustd.lazy, gpustd.nn.conv.conv2d, "
                    "stable-diffusion.cpp; gpustd.gone, gpustd.nn.conv.conv3d, gpustd.nn.pool\n")
    assert unknown_names(page, tmp_path) == ["gpustd.gone", "gpustd.nn.conv.conv3d",
                                             "gpustd.nn.pool"]


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_repository_paths_exist(path: Path) -> None:
    assert not missing_paths(path), (
        f"{path.relative_to(ROOT)} names paths that are not in the repository: "
        f"{missing_paths(path)}; give the path as it is now")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_modules_and_functions_exist(path: Path) -> None:
    assert not unknown_names(path), (
        f"{path.relative_to(ROOT)} names modules or functions the packages do not have: "
        f"{unknown_names(path)}; give the name as it is now")


def test_documented_environment_variables_are_read() -> None:
    """Every GPUCORE_/GPUSTD_/AVX_/BENCH_ variable the documents name is in the code (a
    renamed or removed one would be set by a user to no effect)."""
    named = {v for path in DOCUMENTS for v in ENV_VAR.findall(path.read_text(encoding="utf-8"))}
    code = "\n".join(path.read_text(encoding="utf-8", errors="replace")
                     for path in _text_files() if path.suffix != ".md")
    assert not {v for v in named if v not in code}, (
        f"the documents name variables no code reads: {sorted(v for v in named if v not in code)}")


def test_documented_command_lines_parse() -> None:
    parser = _parser()
    problems = {}
    for path in DOCUMENTS:
        for command, whole in doc_commands(path.read_text(encoding="utf-8")):
            for problem in command_problems(command, whole, parser):
                problems.setdefault(str(path.relative_to(ROOT)), []).append(problem)
    for command in _help_examples(parser):
        for problem in command_problems(command, True, parser):
            problems.setdefault("--help examples", []).append(problem)
    assert not problems, f"command lines the CLI would refuse: {problems}"
