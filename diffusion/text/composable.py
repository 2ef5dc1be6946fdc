"""The WebUI's composable diffusion syntax: a positive prompt's `AND` parts and their weights.

AUTOMATIC1111's `prompt_parser.get_multicond_prompt_list`; the guidance with the parts is
`diffusion.sampling.kdiffusion.combine`. Public names are re-exported by
`diffusion.text.prompts`.
"""

from __future__ import annotations

import re

__all__ = ["refuse_composable", "split_and"]

_AND = re.compile(r"\bAND\b")
_PART_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def split_and(prompt: str) -> list[tuple[str, float]]:
    """A positive prompt's `AND`-separated parts as (text, weight): a part ending in `:number`
    has that weight, else 1.0; whitespace before the weight and at the end is dropped.

    The WebUI's `get_multicond_prompt_list`, which every positive prompt goes through (after
    comments and extra-network tags are removed), so even `a cat:1.5` with no AND is the text
    `a cat` at weight 1.5. `AND` splits only as a word of its own in capitals (`ANDROID`,
    `and` do not). The sampler then uses uncond + sum(weight * cfg * (cond - uncond)).
    """
    parts = []
    for part in _AND.split(prompt):
        match = _PART_WEIGHT.match(part)
        assert match is not None  # the pattern matches any text
        text, weight = match.groups()
        parts.append((text, 1.0 if weight is None else float(weight)))
    return parts


def refuse_composable(prompt: str, where: str) -> None:
    """ValueError for a positive prompt (tags removed) that the WebUI reads as composable
    diffusion (`AND` parts, or a `:weight` at its end), for `where`, a path that does not
    guide with parts, rather than encode AND and the weight as words."""
    parts = split_and(prompt)
    if len(parts) == 1 and parts[0][0] == prompt.rstrip():
        return
    found = (f"{len(parts)} parts joined by AND" if len(parts) > 1 else
             f"a guidance weight at its end, :{parts[0][1]:g}")
    raise ValueError(f"the prompt has {found}: the WebUI reads that as composable diffusion, "
                     f"which is not supported for {where}; join parts with a comma (or write "
                     "'and') and weigh words with (word:1.2), or use an SD 1.x/2.x or SDXL "
                     "model")
