"""Shared pieces of the First Block Cache tests (tests/diffusion/models/test_step_cache_*.py):
a short Euler run that records every flow, our transformer run uncached and cached beside a
reference run, a spy on the decisions of diffusers' own hook, the hook's rule laid over a
FLUX-shaped diffusers model by hand (Chroma, FLUX.2: models the hook cannot run), over
diffusers' Wan VACE and Wan Animate transformers with the hints (face blocks) inside the blocks
(as ours caches them), and TeaCache4Wan2.1's rule over a diffusers Wan transformer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from diffusers.hooks import first_block_cache as diffusers_fbc

from diffusion.models.step_cache import FirstBlockCache

STEPS = 10

# one model call: latents and sigma in, flow out
Call = Callable[[np.ndarray, float], np.ndarray]


def euler(call: Call, x: np.ndarray) -> list[np.ndarray]:
    """STEPS Euler steps from sigma 1 to 0; the flow of every call, in order."""
    sigmas = np.linspace(1.0, 0.0, STEPS + 1).astype(np.float32)
    flows = []
    for i in range(STEPS):
        flows.append(call(x, float(sigmas[i])))
        x = x + (sigmas[i + 1] - sigmas[i]) * flows[-1]
    return flows


class CacheRun(NamedTuple):
    got: list[np.ndarray]  # our flows with the cache
    expected: list[np.ndarray]  # the reference's flows
    uncached: list[np.ndarray]  # our flows without the cache
    decisions: list[bool]  # per cached call: whether the cache computed the blocks


def cache_run(ours: Callable[[FirstBlockCache | None], Call], theirs: Call,
              start: np.ndarray, threshold: float) -> CacheRun:
    """Euler runs from `start`: ours uncached, `theirs` (the reference, already hooked), and
    ours through a FirstBlockCache(threshold), recording its decision at every call."""
    uncached = euler(ours(None), start)
    expected = euler(theirs, start)
    cache = FirstBlockCache(threshold)
    call, decisions = ours(cache), []

    def recorded(x: np.ndarray, sigma: float) -> np.ndarray:
        before = cache.computed
        out = call(x, sigma)
        decisions.append(cache.computed > before)
        return out

    return CacheRun(euler(recorded, start), expected, uncached, decisions)


def largest_change(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """The largest element difference between two runs' flows."""
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def diffusers_decisions(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The list that diffusers' First Block Cache hook appends each of its decisions to
    (True: computed the remaining blocks), from now on in this test."""
    decisions: list[bool] = []
    original = diffusers_fbc.FBCHeadBlockHook._should_compute_remaining_blocks

    def spy(self: Any, residual: Any) -> bool:
        decisions.append(original(self, residual))
        return decisions[-1]

    monkeypatch.setattr(diffusers_fbc.FBCHeadBlockHook, "_should_compute_remaining_blocks", spy)
    return decisions


def first_block_cache_by_hand(reference: Any, threshold: float) -> list[bool]:
    """First Block Cache's rule laid over a diffusers FLUX-shaped model's blocks by hand (what
    diffusers' hook does for FLUX.1): the first double block decides from the image tokens'
    residual, the other blocks pass their input on when skipping, and the last single block
    adds the image tokens' tail residual of the last computed call. Returns the list that
    each decision is appended to."""
    state: dict[str, Any] = {}
    decisions: list[bool] = []
    first, *doubles = reference.transformer_blocks
    *singles, last = reference.single_transformer_blocks

    def head(original: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            text, image = original(*args, **kwargs)
            residual = image - kwargs["hidden_states"]
            previous = state.get("residual")
            state["compute"] = previous is None or float(
                (residual - previous).abs().mean() / previous.abs().mean()) > threshold
            decisions.append(state["compute"])
            if state["compute"]:
                state.update(residual=residual, head=image)
            state["length"] = text.shape[1]
            return text, image
        return forward

    def middle(original: Callable[..., Any], pair: bool) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            if state["compute"]:
                return original(*args, **kwargs)
            if pair:
                return kwargs["encoder_hidden_states"], kwargs["hidden_states"]
            return kwargs["hidden_states"]
        return forward

    def tail(original: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            length = state["length"]
            if state["compute"]:
                out = original(*args, **kwargs)
                state["tail"] = out[:, length:] - state["head"]
                return out
            x = kwargs["hidden_states"]
            return torch.cat([x[:, :length], x[:, length:] + state["tail"]], dim=1)
        return forward

    first.forward = head(first.forward)
    for block in doubles:
        block.forward = middle(block.forward, True)
    for block in singles:
        block.forward = middle(block.forward, False)
    last.forward = tail(last.forward)
    return decisions


def vace_first_block_cache_by_hand(model: Any, threshold: float, branches: int = 1,
                                   fresh_every: int | None = None) -> list[bool]:
    """First Block Cache with the hints inside the blocks laid over diffusers'
    WanVACETransformer3DModel `model` by hand: block 1's input (block 0's output and its
    hint) decides, blocks 1... pass their input on when skipping, and the final norm's input
    is the first block's output plus the tail residual (later blocks and hints) of the last
    computed call. The same over WanAnimateTransformer3DModel, whose face blocks run between
    the blocks: the one after block 0 is in block 1's input, the later ones' outputs are
    replaced at the final norm. `branches`: calls taking turns, each with its own state
    (CFG's prompt and negative prompt: 2); `fresh_every`: calls after which every state
    starts again (Wan Animate's segments, each a run of its own). Returns the list each
    decision is appended to."""
    states: list[dict[str, Any]] = [{} for _ in range(branches)]
    turn = {"calls": 0, "state": states[0]}
    decisions: list[bool] = []

    def first(module: Any, args: tuple[Any, ...]) -> None:
        if fresh_every and turn["calls"] % fresh_every == 0:
            for state in states:
                state.clear()
        turn["state"] = states[turn["calls"] % branches]
        turn["calls"] += 1
        turn["state"]["input"] = args[0]

    def decide(module: Any, args: tuple[Any, ...]) -> None:
        state = turn["state"]
        residual = args[0] - state["input"]
        previous = state.get("residual")
        state["compute"] = previous is None or float(
            (residual - previous).abs().mean() / previous.abs().mean()) > threshold
        decisions.append(state["compute"])
        state["head"] = args[0]
        if state["compute"]:
            state["residual"] = residual

    def skipped(original: Callable[..., Any]) -> Callable[..., Any]:
        def forward(hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
            if turn["state"]["compute"]:
                return original(hidden_states, *args, **kwargs)
            return hidden_states
        return forward

    def norm(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        state = turn["state"]
        if state["compute"]:
            state["tail"] = args[0] - state["head"].float()
            return None
        return (state["head"].float() + state["tail"],)

    model.blocks[0].register_forward_pre_hook(first)
    model.blocks[1].register_forward_pre_hook(decide)
    for block in model.blocks[1:]:
        block.forward = skipped(block.forward)
    model.norm_out.register_forward_pre_hook(norm)
    return decisions


def teacache_by_hand(model: Any, threshold: float, steps: int,
                     coefficients: tuple[float, ...]) -> list[bool]:
    """TeaCache4Wan2.1's rule (its polynomial `coefficients`) laid over diffusers' Wan
    transformer `model` (VACE, Animate): the time embedding's rescaled relative L1 change
    accumulated, the first and last steps computed; a skipped call passes the blocks' input
    on to the final norm plus the residual of the last computed call (hints and face blocks
    included). Returns the list each decision is appended to."""
    rescale = np.poly1d(coefficients)
    state: dict[str, Any] = {"distance": 0.0, "step": 0, "previous": None}
    decisions: list[bool] = []

    def embedded(module: Any, args: Any, out: Any) -> None:
        temb, previous, step = out[0], state["previous"], state["step"]
        compute = step in (0, steps - 1)
        if not compute:
            state["distance"] += float(rescale(float(
                (temb - previous).abs().mean() / previous.abs().mean())))
            compute = not state["distance"] < threshold
        if compute:
            state["distance"] = 0.0
        state.update(previous=temb, step=(step + 1) % steps, compute=compute)
        decisions.append(compute)

    def first(module: Any, args: tuple[Any, ...]) -> None:
        state["input"] = args[0]

    def skipped(original: Any) -> Any:
        def forward(hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
            return original(hidden_states, *args, **kwargs) if state["compute"] \
                else hidden_states
        return forward

    def norm(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if state["compute"]:
            state["residual"] = args[0] - state["input"].float()
            return None
        return (state["input"].float() + state["residual"],)

    model.condition_embedder.register_forward_hook(embedded)
    model.blocks[0].register_forward_pre_hook(first)
    for block in model.blocks:
        block.forward = skipped(block.forward)
    model.norm_out.register_forward_pre_hook(norm)
    return decisions
