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

`parse_prompt` does all of it in the WebUI's order and returns an inspectable `Prompt`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "BREAK", "ExtraNetwork", "Prompt", "extract_extra_networks", "parse_prompt",
    "parse_prompt_attention", "prompt_schedule", "prompt_schedules",
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


# -- prompt editing and alternation ---------------------------------------------------------------
#
# The WebUI parses these with a lark grammar (`schedule_parser`):
#   start:      (prompt | /[][():]/+)*
#   prompt:     (emphasized | scheduled | alternate | plain | WHITESPACE)*
#   emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
#   scheduled:  "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
#   alternate:  "[" prompt ("|" [prompt])+ "]"
#   plain:      /([^\\\[\]():|]|\\.)+/
# Inside a construct brackets must nest, so only the top level is ambiguous (a bracket may be
# text there); this recursive descent tries the construct first and falls back to text. A `|`
# outside any alternation, or a backslash ending the text, makes the grammar fail, and the WebUI
# then uses the whole prompt unchanged at every step; so do we.

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_SPACE = re.compile(r"\s*")
_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")


@dataclass
class _Scheduled:
    before: list | None  # None: `[to:when]`
    after: list
    number: str  # as written: a decimal point makes it a fraction of the steps
    when: int = 0  # the step it switches after, set by _resolve_steps


@dataclass
class _Alternate:
    options: list[list]


class _Syntax(Exception):
    """The text is not in the schedule grammar (the WebUI's LarkError)."""


class _ScheduleParser:
    def __init__(self, text: str) -> None:
        self.text = text

    def parse(self) -> list:
        """The top level: constructs, text, and brackets or colons that are only text."""
        nodes: list = []
        pos = 0
        while pos < len(self.text):
            items, pos = self._prompt(pos)
            nodes += items
            if pos < len(self.text):
                if self.text[pos] == "|":
                    raise _Syntax(pos)
                nodes.append(self.text[pos])
                pos += 1
        return nodes

    def _prompt(self, pos: int) -> tuple[list, int]:
        """Plain text and whole constructs from `pos`, up to a character that ends a prompt."""
        nodes: list = []
        while pos < len(self.text):
            plain = _PLAIN.match(self.text, pos)
            if plain:
                nodes.append(plain.group(0))
                pos = plain.end()
                continue
            if self.text[pos] == "\\":  # at the end, or before a newline
                raise _Syntax(pos)
            construct = self._construct(pos) if self.text[pos] in "([" else None
            if construct is None:
                break
            nodes.append(construct[0])
            pos = construct[1]
        return nodes, pos

    def _construct(self, pos: int) -> tuple[object, int] | None:
        """The emphasis, editing or alternation opening at `pos`, or None if there is none."""
        try:
            return self._round(pos) if self.text[pos] == "(" else self._square(pos)
        except _Syntax:
            return None

    def _expect(self, pos: int, chars: str) -> str:
        if pos >= len(self.text) or self.text[pos] not in chars:
            raise _Syntax(pos)
        return self.text[pos]

    def _round(self, pos: int) -> tuple[list, int]:
        first, pos = self._prompt(pos + 1)
        if self._expect(pos, "):") == ")":
            return ["(", first, ")"], pos + 1
        second, pos = self._prompt(pos + 1)
        self._expect(pos, ")")
        return ["(", first, ":", second, ")"], pos + 1

    def _square(self, pos: int) -> tuple[object, int]:
        first, pos = self._prompt(pos + 1)
        mark = self._expect(pos, "]|:")
        if mark == "]":
            return ["[", first, "]"], pos + 1
        if mark == "|":
            options = [first]
            while self.text[pos] == "|":
                option, pos = self._prompt(pos + 1)
                options.append(option)
                self._expect(pos, "]|")
            return _Alternate(options), pos + 1
        ending = self._when(pos + 1)
        if ending is not None:  # [to:when]
            return _Scheduled(None, first, ending[0]), ending[1]
        second, pos = self._prompt(pos + 1)
        self._expect(pos, ":")
        ending = self._when(pos + 1)
        if ending is None:
            raise _Syntax(pos)
        return _Scheduled(first, second, ending[0]), ending[1]

    def _when(self, pos: int) -> tuple[str, int] | None:
        """`[WHITESPACE] NUMBER [WHITESPACE] "]"` from `pos`: (number, end) or None."""
        pos = _SPACE.match(self.text, pos).end()
        number = _NUMBER.match(self.text, pos)
        if not number:
            return None
        end = _SPACE.match(self.text, number.end()).end()
        if end >= len(self.text) or self.text[end] != "]":
            return None
        return number.group(0), end + 1


def _resolve_steps(nodes: list, steps: int, offsets: tuple[int, float] | None,
                   found: set[int]) -> None:
    """Set each edit's `when` as the WebUI's `CollectSteps` does; collect the steps where the
    prompt changes into `found`. `offsets` is (int_offset, float_offset), None for the old
    scheduling (a value below 1 is a fraction)."""
    for node in nodes:
        if isinstance(node, _Scheduled):
            value = float(node.number)
            if offsets is None:
                value = value * steps if value < 1 else value
            elif "." in node.number:
                value = (value - offsets[1]) * steps
            else:
                value -= offsets[0]
            node.when = int(max(-1.0, min(float(steps), value)))
            if node.when >= 1:
                found.add(node.when)
            _resolve_steps([node.before or [], node.after], steps, offsets, found)
        elif isinstance(node, _Alternate):
            found.update(range(1, steps + 1))
            _resolve_steps(node.options, steps, offsets, found)
        elif isinstance(node, list):
            _resolve_steps(node, steps, offsets, found)


def _text_at(nodes: list, step: int) -> str:
    """The prompt text in force at `step` (the WebUI's `AtStep` transformer)."""
    parts = []
    for node in nodes:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, _Scheduled):
            chosen = (node.before or []) if step <= node.when else node.after
            parts.append(_text_at(chosen, step))
        elif isinstance(node, _Alternate):
            parts.append(_text_at(node.options[(step - 1) % len(node.options)], step))
        else:
            parts.append(_text_at(node, step))
    return "".join(parts)


def _check_steps(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def prompt_schedule(prompt: str, steps: int, *, hires_steps: int | None = None,
                    use_old_scheduling: bool = False) -> list[tuple[int, str]]:
    """[(end_at_step, text)]: `text` is the prompt through step `end_at_step` (1-based, the last
    entry ends at `steps`), prompt editing and alternation resolved; emphasis stays as written.

    The WebUI's `get_learned_conditioning_prompt_schedules([prompt], steps, hires_steps,
    use_old_scheduling)[0]`, its current default (`use_old_scheduling=False`): `when` with a
    decimal point is a fraction of the steps (`1.5` never switches), without one a step
    number. With `hires_steps` (the hires-fix pass) the times count on from the first pass:
    integers less `steps`, fractions less 1, over `hires_steps`. `use_old_scheduling` is the
    WebUI's "Old prompt editing timelines": below 1 a fraction, else a step, hires ignored.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    steps = _check_steps("steps", steps)
    offsets: tuple[int, float] | None = (0, 0.0)
    if use_old_scheduling:
        offsets = None
    elif hires_steps is not None:
        offsets = (steps, 1.0)
        steps = _check_steps("hires_steps", hires_steps)
    try:
        nodes = _ScheduleParser(prompt).parse()
    except _Syntax:
        return [(steps, prompt)]
    found = {steps}
    _resolve_steps(nodes, steps, offsets, found)
    return [(step, _text_at(nodes, step)) for step in sorted(found)]


def prompt_schedules(prompts: list[str], steps: int, *, hires_steps: int | None = None,
                     use_old_scheduling: bool = False) -> list[list[tuple[int, str]]]:
    """`prompt_schedule` of each prompt: the WebUI's `get_learned_conditioning_prompt_schedules`."""
    cache: dict[str, list[tuple[int, str]]] = {}
    for prompt in prompts:
        if prompt not in cache:
            cache[prompt] = prompt_schedule(prompt, steps, hires_steps=hires_steps,
                                            use_old_scheduling=use_old_scheduling)
    return [cache[prompt] for prompt in prompts]


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
class Prompt:
    """A prompt as the WebUI reads it, for inspection and for `conditioning.encode`.

    `text` as typed; `networks` its extra-network tags; `schedule` the (end_at_step, text)
    entries of the tag-free text; `pieces[i]` the emphasis of `schedule[i]`'s text as
    (text, weight) pairs (`BREAK` where a chunk ends early).
    """

    text: str
    networks: tuple[ExtraNetwork, ...]
    schedule: tuple[tuple[int, str], ...]
    pieces: tuple[tuple[tuple[str, float], ...], ...]

    def at(self, step: int) -> str:
        """The text in force at WebUI step `step` (0-based count of model evaluations: the
        first entry whose end_at_step >= step)."""
        return self.schedule[_entry_index([end for end, _ in self.schedule], step)][1]


def _entry_index(ends: list[int], step: int) -> int:
    """The WebUI's `reconstruct_cond_batch`: the first entry with step <= end, else the first."""
    return next((i for i, end in enumerate(ends) if step <= end), 0)


def parse_prompt(text: str, steps: int, *, hires_steps: int | None = None,
                 use_old_scheduling: bool = False, extra_networks: bool = True) -> Prompt:
    """Parse a prompt as the WebUI does: extra-network tags out (positive prompts only: the
    WebUI leaves tags in a negative prompt as text, so pass `extra_networks=False` there),
    then the editing schedule, then the emphasis of each scheduled text."""
    networks: list[ExtraNetwork] = []
    clean = text
    if extra_networks:
        clean, networks = extract_extra_networks(text)
    schedule = prompt_schedule(clean, steps, hires_steps=hires_steps,
                               use_old_scheduling=use_old_scheduling)
    pieces = tuple(tuple(parse_prompt_attention(entry)) for _, entry in schedule)
    return Prompt(text, tuple(networks), tuple(schedule), pieces)
