"""The WebUI's prompt editing on the flow-matching families, as Forge runs it on FLUX: a prompt
(or negative prompt) with `[from:to:when]` or alternation `[a|b]` is several texts over the
steps, and each model evaluation reads the one its step is in (the WebUI's
`reconstruct_cond_batch`: the first entry whose end is at or after the evaluations done so
far). Each distinct (prompt, negative prompt) pair gets the model's guided flow of its own
(the text encoders run once per pair); a prompt without such syntax is one flow, as before.
Emphasis and BREAK stay text here (prompts are plain text for these models); AND is refused
where the family refuses it.

    flow, shape, mu = scheduled_flow(model, request, prompts, width, height, cache,
                                     steps=int(request.steps))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import numpy as np

from ...models.step_cache import StepCache
from ...text.prompt_editing import entry_index, prompt_schedule
from ..request import GenerationRequest

__all__ = ["scheduled_flow"]

Flow = Callable[[np.ndarray, float], np.ndarray]


class GuidedFlows(Protocol):
    """What a scheduled flow needs of a flow model: its guided flow for a request at a size."""

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None
                    ) -> tuple[Flow, tuple[int, ...], float | None]: ...


def scheduled_flow(model: GuidedFlows, request: GenerationRequest, prompts: list[str],
                   width: int, height: int, cache: StepCache | None, *, steps: int,
                   hires_steps: int | None = None
                   ) -> tuple[Flow, tuple[int, ...], float | None]:
    """`model.guided_flow` of `prompts` (one text for the batch, tags removed) and the
    request's negative prompt as the WebUI schedules them over `steps` model evaluations
    (`hires_steps`: the hires pass's, whose times count on from the first pass's `steps`),
    its latents' shape and mu."""
    positive = prompt_schedule(prompts[0], steps, hires_steps=hires_steps)
    negative = prompt_schedule(request.negative_prompt, steps, hires_steps=hires_steps)
    if len(positive) == 1 and len(negative) == 1:
        prompt, negative_prompt = positive[0][1], negative[0][1]
        if prompt == prompts[0] and negative_prompt == request.negative_prompt:
            return model.guided_flow(request, prompts, width, height, cache)
    ends = sorted({end for end, _ in positive} | {end for end, _ in negative})
    made: dict[tuple[str, str], tuple[Flow, tuple[int, ...], float | None]] = {}
    segments: list[Flow] = []
    for end in ends:
        pair = (positive[entry_index([e for e, _ in positive], end)][1],
                negative[entry_index([e for e, _ in negative], end)][1])
        if pair not in made:
            made[pair] = model.guided_flow(replace(request, negative_prompt=pair[1]),
                                           [pair[0]] * len(prompts), width, height, cache)
        segments.append(made[pair][0])
    calls = 0

    def flow(x: np.ndarray, t: float) -> np.ndarray:
        nonlocal calls
        chosen = segments[entry_index(ends, calls)]
        calls += 1
        return chosen(x, t)

    _, shape, mu = next(iter(made.values()))
    return flow, shape, mu
