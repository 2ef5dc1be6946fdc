"""What the flow pipelines that run one picture a transformer call (Krea 2, Kandinsky 5) share
ahead of their steps: each picture's prompt and, when guided, its negative prompt encoded
once, and a step-cache branch for each of those passes (diffusers' separate calls).

    passes = prompt_passes(self.encode_prompt, prompts, negative_prompt, guided, cache)
    pred = predict(x_i, passes.texts[i], passes.branches[i][0])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...models.step_cache import StepCache

__all__ = ["PromptPasses", "prompt_passes"]


@dataclass
class PromptPasses:
    """`texts[i]` and `negatives[i]` (empty unguided): picture i's encoded prompt and
    negative prompt; `branches[i]`: a step-cache branch for each of its passes (None
    without a cache)."""

    texts: list[Any]
    negatives: list[Any]
    branches: list[list[Any]]


def prompt_passes(encode: Callable[[str], Any], prompts: Sequence[str],
                  negative_prompt: str | Sequence[str], guided: bool,
                  cache: StepCache | None) -> PromptPasses:
    """`encode` of each prompt and, where `guided`, of each negative prompt (one string for
    every picture, or one a picture; ValueError in one line for another count), and the
    passes' cache branches."""
    batch = len(prompts)
    negatives = ([negative_prompt] * batch if isinstance(negative_prompt, str)
                 else list(negative_prompt))
    if guided and len(negatives) != batch:
        raise ValueError(f"{len(negatives)} negative prompts for {batch} prompts")
    passes = 1 + guided
    return PromptPasses(
        texts=[encode(p) for p in prompts],
        negatives=[encode(n) for n in negatives] if guided else [],
        branches=[[None] * passes if cache is None else [cache.branch() for _ in range(passes)]
                  for _ in range(batch)])
