"""The WebUI's prompt syntax: emphasis, BREAK, prompt editing, alternation, extra-network tags.

Parsed as AUTOMATIC1111's `modules/prompt_parser.py` and `modules/extra_networks.py` parse it, so
a prompt copied from a model page gives the conditioning it gave there:

- `(x)` x1.1, `((x))` x1.21, `[x]` /1.1, `(x:1.3)`; `\\(` `\\)` `\\[` `\\]` `\\\\` are literal
  characters; brackets left open weigh to the end of the prompt (`parse_prompt_attention`).
- `BREAK` (upper case, a word of its own) ends a 75-token chunk early.
- `[from:to:when]`, `[to:when]`, `[from::when]`: `when` a step number, or with a decimal point a
  fraction of the steps; `[a|b|c]` changes every step; both nest (`prompt_schedule`).
- `<lora:NAME:WEIGHT>`, `<hypernet:NAME:WEIGHT>`, any `<kind:args>`: removed from the text and
  returned separately (`extract_extra_networks`).
- `# comment` to the end of a line: removed (`strip_comments`, the WebUI's "Enable comments").
- `a AND b:0.5`: composable diffusion, a positive prompt's parts with their guidance weights
  (`split_and`; `a cat:1.5` is one part at 1.5); each part is a prompt of its own for
  everything above (`PromptPart`). The sampler guides with every part
  (diffusion.sampling.kdiffusion.combine). Negative prompts are not split.

`parse_prompt` does all of it in the WebUI's order and returns an inspectable `Prompt`. The
editing syntax lives in `prompt_editing`, the AND parts in `composable`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .composable import refuse_composable, split_and
from .prompt_editing import entry_index, prompt_schedule, prompt_schedules

__all__ = [
    "BREAK", "ExtraNetwork", "Prompt", "PromptPart", "extract_extra_networks",
    "parse_prompt", "parse_prompt_attention", "prompt_schedule",
    "prompt_schedules", "refuse_composable", "split_and", "strip_comments",
]

BREAK: tuple[str, float] = ("BREAK", -1.0)
"""The piece `parse_prompt_attention` puts where `BREAK` was: a chunk boundary, not text."""

# -- emphasis -----------------------------------------------------------------------------------

# One token of emphasis syntax per match; group 1 is the weight of `:1.3)`.
_ATTENTION = re.compile(r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|   # escapes (a lone backslash is dropped)
\(|\[|
:\s*([+-]?[.\d]+)\s*\)|       # the end of (text:weight)
\)|]|
[^\\()\[\]:]+|                # plain text
:
""", re.X)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_ROUND, _SQUARE = 1.1, 1 / 1.1


def _weight(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"emphasis weight {text!r} is not a number; write e.g. (word:1.2), or "
                         r"escape the parenthesis as \) to keep it as text") from None


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """`text` as (piece, weight) pairs, adjacent equal weights merged; BREAK as `BREAK`.

    The WebUI's `prompt_parser.parse_prompt_attention`, weights multiplied in its order so they
    are the same floats (`(((house:1.3)))` -> 1.3 * 1.1 * 1.1 = 1.5730000000000004). Unmatched
    `)` and `]` are text; `(` and `[` left open apply to the rest of the prompt.
    """
    pieces: list[list] = []
    open_round: list[int] = []
    open_square: list[int] = []

    def multiply_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0])
        elif token == "(":
            open_round.append(len(pieces))
        elif token == "[":
            open_square.append(len(pieces))
        elif weight is not None and open_round:
            multiply_from(open_round.pop(), _weight(weight))
        elif token == ")" and open_round:
            multiply_from(open_round.pop(), _ROUND)
        elif token == "]" and open_square:
            multiply_from(open_square.pop(), _SQUARE)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i > 0:
                    pieces.append(list(BREAK))
                pieces.append([part, 1.0])
    for start in open_round:
        multiply_from(start, _ROUND)
    for start in open_square:
        multiply_from(start, _SQUARE)
    return _merge_equal_weights(pieces or [["", 1.0]])


def _merge_equal_weights(pieces: list[list]) -> list[tuple[str, float]]:
    merged: list[list] = []
    for text, weight in pieces:
        if merged and merged[-1][1] == weight:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return [(text, weight) for text, weight in merged]


# -- comments -----------------------------------------------------------------------------------

_COMMENT_LINE = re.compile(r"(^|\n)#[^\n]*(\n|$)")
_COMMENT_TAIL = re.compile(r"#[^\n]*(\n|$)")


def strip_comments(text: str) -> str:
    """`text` without `#` comments: a whole comment line, or from `#` to the end of the line,
    becomes a line break. The WebUI's `processing_scripts/comments.py` (on by default), run on
    prompts and negative prompts before anything else."""
    return _COMMENT_TAIL.sub("\n", _COMMENT_LINE.sub("\n", text))


# -- extra networks -------------------------------------------------------------------------------

_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class ExtraNetwork:
    """One `<kind:name:arg:...>` tag. `args` are the colon-separated items after the name;
    `name=value` items are `named` (the WebUI's `ExtraNetworkParams`: `<lora:x:0.5:unet=1>`)."""

    kind: str
    name: str
    args: tuple[str, ...] = ()
    named: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def weight(self) -> float:
        """The multiplier: the first positional argument, else 1.0 (for LoRA, the text-encoder
        weight: the WebUI's `te=` overrides it)."""
        text = self.named.get("te", self.args[0] if self.args else "1")
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"<{self.kind}:{self.name}:...> has weight {text!r}, which is not "
                             f"a number; write e.g. <{self.kind}:{self.name}:0.8>") from None

    @property
    def unet_weight(self) -> float:
        """LoRA's UNet multiplier: `unet=`, else the second positional argument, else `weight`."""
        text = self.named.get("unet", self.args[1] if len(self.args) > 1 else None)
        if text is None:
            return self.weight
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"<{self.kind}:{self.name}:...> has UNet weight {text!r}, which is "
                             "not a number") from None

    @property
    def dyn_dim(self) -> int | None:
        """LoRA's rank limit: `dyn=`, else the third positional argument, else None."""
        text = self.named.get("dyn", self.args[2] if len(self.args) > 2 else None)
        try:
            return None if text is None else int(text)
        except ValueError:
            raise ValueError(f"<{self.kind}:{self.name}:...> has dyn {text!r}, which is not an "
                             "integer") from None


def _extra_network(kind: str, items: list[str]) -> ExtraNetwork:
    positional, named = [], {}
    for item in items:
        parts = item.split("=", 2)
        if len(parts) == 2:
            named[parts[0]] = parts[1]
        else:
            positional.append(item)
    if not positional:
        raise ValueError(f"<{kind}:{':'.join(items)}> names no network; write <{kind}:NAME> or "
                         f"<{kind}:NAME:WEIGHT>")
    return ExtraNetwork(kind, positional[0], tuple(positional[1:]), named)


def extract_extra_networks(prompt: str) -> tuple[str, list[ExtraNetwork]]:
    """(the prompt without its `<kind:args>` tags, the tags in order of appearance).

    The WebUI's `extra_networks.parse_prompt`: each tag is replaced by nothing (the spaces
    around it stay). Which kinds exist (lora, hypernet, ...) is for the caller to decide.
    """
    found: list[ExtraNetwork] = []

    def take(match: re.Match) -> str:
        found.append(_extra_network(match.group(1), match.group(2).split(":")))
        return ""

    return _EXTRA_NETWORK.sub(take, prompt), found


# -- all of it ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptPart:
    """One `AND`-separated part of a positive prompt (a prompt without AND is one part):
    `weight` its guidance weight, `schedule` the (end_at_step, text) entries of its editing
    schedule, `pieces[i]` the emphasis of `schedule[i]`'s text as (text, weight) pairs
    (`BREAK` where a chunk ends early)."""

    weight: float
    schedule: tuple[tuple[int, str], ...]
    pieces: tuple[tuple[tuple[str, float], ...], ...]

    def at(self, step: int) -> str:
        """The text in force at WebUI step `step` (0-based count of model evaluations: the
        first entry whose end_at_step >= step)."""
        return self.schedule[entry_index([end for end, _ in self.schedule], step)][1]


@dataclass(frozen=True)
class Prompt:
    """A prompt as the WebUI reads it, for inspection and for `conditioning.encode`.

    `text` as typed; `networks` its extra-network tags; `parts` the tag-free text split on
    `AND`, each with its weight, editing schedule and emphasis. `schedule`, `pieces` and `at`
    are those of the only part of a prompt without AND.
    """

    text: str
    networks: tuple[ExtraNetwork, ...]
    parts: tuple[PromptPart, ...]

    @property
    def weights(self) -> tuple[float, ...]:
        """The parts' guidance weights (the WebUI's conds_list weights of this prompt)."""
        return tuple(part.weight for part in self.parts)

    @property
    def composable(self) -> bool:
        """Whether it guides by composable diffusion: several parts, or one whose weight is
        not 1 (one part at weight 1 is plain classifier-free guidance)."""
        return len(self.parts) > 1 or self.parts[0].weight != 1.0

    @property
    def schedule(self) -> tuple[tuple[int, str], ...]:
        """The only part's schedule (ValueError for a prompt of several parts)."""
        return self._only_part().schedule

    @property
    def pieces(self) -> tuple[tuple[tuple[str, float], ...], ...]:
        """The only part's emphasis pieces (ValueError for a prompt of several parts)."""
        return self._only_part().pieces

    def at(self, step: int) -> str:
        """The only part's text at `step` (ValueError for a prompt of several parts)."""
        return self._only_part().at(step)

    def _only_part(self) -> PromptPart:
        if len(self.parts) != 1:
            raise ValueError(f"the prompt has {len(self.parts)} parts joined by AND; take each "
                             "part's schedule from prompt.parts")
        return self.parts[0]


def parse_prompt(text: str, steps: int, *, hires_steps: int | None = None,
                 use_old_scheduling: bool = False, extra_networks: bool = True,
                 composable: bool = True, comments: bool = True) -> Prompt:
    """Parse a prompt as the WebUI does: `#` comments out (`comments=False`: the WebUI's
    "Enable comments" off), extra-network tags out, the `AND` parts and their weights
    (`split_and`), then each part's editing schedule and the emphasis of each scheduled text.

    Tags and AND are positive-prompt syntax: for a negative prompt pass
    `extra_networks=False, composable=False` (the WebUI reads it as one text, tags included).
    """
    networks: list[ExtraNetwork] = []
    clean = strip_comments(text) if comments else text
    if extra_networks:
        clean, networks = extract_extra_networks(clean)
    parts = []
    for part_text, weight in split_and(clean) if composable else [(clean, 1.0)]:
        schedule = prompt_schedule(part_text, steps, hires_steps=hires_steps,
                                   use_old_scheduling=use_old_scheduling)
        pieces = tuple(tuple(parse_prompt_attention(entry)) for _, entry in schedule)
        parts.append(PromptPart(weight, tuple(schedule), pieces))
    return Prompt(text, tuple(networks), tuple(parts))
