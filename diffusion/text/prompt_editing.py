"""The WebUI's prompt editing `[from:to:when]` and alternation `[a|b]`: a prompt's schedule.

AUTOMATIC1111's `prompt_parser.get_learned_conditioning_prompt_schedules`, without its lark
dependency. Public names are re-exported by `diffusion.text.prompts`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["entry_index", "prompt_schedule", "prompt_schedules"]

# -- the grammar ------------------------------------------------------------------------------
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

# the deepest nesting of ( ) and [ ] read (the parser recurses about 3 frames a level; Python
# stops at 1000 frames, and a prompt of 20000 "(" raised RecursionError)
MAX_DEPTH = 100
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_SPACE = re.compile(r"\s*")
_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")


def _skip_space(text: str, pos: int) -> int:
    """The end of the whitespace at `pos` (`pos` itself where there is none)."""
    match = _SPACE.match(text, pos)
    assert match is not None  # \s* matches the empty string too
    return match.end()


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
        self.depth = 0

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
        if self.depth >= MAX_DEPTH:
            raise ValueError(f"the prompt nests ( ) and [ ] more than {MAX_DEPTH} deep (at "
                             f"character {pos}); nest them less, or escape literal brackets "
                             "as \\( \\[")
        self.depth += 1
        try:
            return self._round(pos) if self.text[pos] == "(" else self._square(pos)
        except _Syntax:
            return None
        finally:
            self.depth -= 1

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
        pos = _skip_space(self.text, pos)
        number = _NUMBER.match(self.text, pos)
        if not number:
            return None
        end = _skip_space(self.text, number.end())
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


def entry_index(ends: list[int], step: int) -> int:
    """Which schedule entry serves WebUI step `step` (0-based count of model evaluations), given
    the entries' end_at_steps: the first with step <= end, else the first (the WebUI's
    `reconstruct_cond_batch`)."""
    return next((i for i, end in enumerate(ends) if step <= end), 0)
