"""First Block Cache on Wan VACE's transformer over a short Euler run of a tiny random model.
Ours takes a VACE hint as part of the main block it follows: the first block's residual (its
hint added) decides, and a skipped call adds the residual of the last computed call from the
first block's output (hints included) to the final norm, the control branch skipped with
the blocks. The reference is diffusers' WanVACETransformer3DModel driven by hand with that
rule. diffusers' own hook (`enable_cache(FirstBlockCacheConfig)`) differs by design: it hooks
the main blocks alone, so it decides on the first block's residual without its hint, runs
every VACE block at every call, and on a skipped call adds every fresh hint to a cached
residual that already holds the last computed call's hints but the last block's: the hints
of the other VACE layers counted twice."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from diffusers.hooks import FirstBlockCacheConfig
from first_block_cache_ref import (
    STEPS,
    Call,
    cache_run,
    euler,
    largest_change,
    teacache_by_hand,
    vace_first_block_cache_by_hand,
)
from sd_tiny import state_dict
from support import assert_close
from wan_vace_tiny import VACE_TINY, tiny_vace_transformer

import gpucore
import gpustd
from diffusion.models.step_cache import TEACACHE_WAN_COEFFICIENTS, FirstBlockCache, TeaCache
from diffusion.models.wan_vace import WanVACETransformer3DModel

THRESHOLD = 0.8  # a random tiny model's residuals move far more than a trained one's
TEA_THRESHOLD = 0.3
TOL = 1e-4  # measured: 7.6e-6 at worst (flows up to 10)


def _inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latents, caption, control): a video of 2 latent frames, 6 x 10 latents, a 7-token
    caption."""
    rng = np.random.default_rng(4)
    start = rng.standard_normal((1, VACE_TINY["in_channels"], 2, 6, 10)).astype(np.float32)
    text = rng.standard_normal((1, 7, VACE_TINY["text_dim"])).astype(np.float32)
    control = rng.standard_normal((1, VACE_TINY["vace_in_channels"], 2, 6, 10)).astype(
        np.float32)
    return start, text, control


def _calls(reference: Any, ours: WanVACETransformer3DModel, text: np.ndarray,
           control: np.ndarray, scale: list[float]) -> tuple[Call, Any]:
    """diffusers' call and ours(cache) -> call, the flow at latents x and sigma."""
    device = ours.device

    def theirs(x: np.ndarray, sigma: float) -> np.ndarray:
        with torch.no_grad():
            return reference(torch.from_numpy(x), torch.tensor([1000.0 * sigma]),  # type: ignore[no-any-return]
                             torch.from_numpy(text),
                             control_hidden_states=torch.from_numpy(control),
                             control_hidden_states_scale=torch.tensor(scale)).sample.numpy()

    def mine(cache: FirstBlockCache | None) -> Call:
        def call(x: np.ndarray, sigma: float) -> np.ndarray:
            return ours(gpustd.asarray(x, device=device),  # type: ignore[no-any-return]
                        np.array([1000.0 * sigma], np.float32),
                        gpustd.asarray(text, device=device),
                        control_hidden_states=gpustd.asarray(control, device=device),
                        control_hidden_states_scale=scale, cache=cache).numpy()
        return call

    return theirs, mine


def _models(device: gpucore.Device) -> tuple[Any, WanVACETransformer3DModel]:
    reference = tiny_vace_transformer()
    ours = WanVACETransformer3DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    return reference, ours


def test_first_block_cache_vace_by_hand(first_device: gpucore.Device) -> None:
    """Ten Euler steps: the same calls computed and skipped as the rule laid over diffusers'
    model by hand, the same flows to float32 error."""
    reference, ours = _models(first_device)
    start, text, control = _inputs()
    theirs, mine = _calls(reference, ours, text, control, [1.0, 0.7])
    expected_decisions = vace_first_block_cache_by_hand(reference, THRESHOLD)
    run = cache_run(mine, theirs, start, THRESHOLD)
    assert run.decisions == expected_decisions
    assert 0 < sum(run.decisions) < len(run.decisions)  # some calls skipped, some computed
    for ours_flow, their_flow in zip(run.got, run.expected, strict=True):
        assert_close(ours_flow, their_flow, tol=TOL)
    assert largest_change(run.got, run.uncached) > 0.02  # the skips visibly change the flows


def test_repeated_call_is_the_uncached_flow(first_device: gpucore.Device) -> None:
    """The same input twice (the second call skipped): ours gives the uncached flow again;
    diffusers' hook gives it only when the first VACE layer's hint, the one not on the last
    block, has scale 0, and else adds that hint once more."""
    reference, ours = _models(first_device)
    start, text, control = _inputs()
    for scale, doubled in (([1.0, 0.7], True), ([0.0, 0.7], False)):
        theirs, mine = _calls(reference, ours, text, control, scale)
        plain = theirs(start, 0.6)
        call = mine(FirstBlockCache(THRESHOLD))
        assert_close(call(start, 0.6), plain, tol=TOL)
        assert_close(call(start, 0.6), plain, tol=TOL)
        reference.enable_cache(FirstBlockCacheConfig(threshold=THRESHOLD))
        with reference.cache_context("cond"):
            first, again = theirs(start, 0.6), theirs(start, 0.6)
        reference.disable_cache()
        assert_close(first, plain, tol=TOL)
        change = float(np.abs(again - plain).max())
        # measured: 2.6 off (flows up to 8) with the first hint, 1e-6 without
        assert change > 1.0 if doubled else change < TOL, (scale, change)


def test_teacache_vace_by_hand(first_device: gpucore.Device) -> None:
    """Ten Euler steps of TeaCache (the time embedding's bias raised by 10 so that it moves
    a little each step, as a trained model's): the same calls computed as TeaCache4Wan2.1's
    rule over diffusers' model, the same flows to float32 error."""
    reference, _ = _models(first_device)
    with torch.no_grad():
        reference.condition_embedder.time_embedder.linear_2.bias += 10.0
    ours = WanVACETransformer3DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    start, text, control = _inputs()
    theirs, mine = _calls(reference, ours, text, control, [1.0, 0.7])
    uncached = euler(mine(None), start)
    expected_decisions = teacache_by_hand(reference, TEA_THRESHOLD, STEPS,
                                          TEACACHE_WAN_COEFFICIENTS["t2v-1.3B"])
    expected = euler(theirs, start)
    cache = TeaCache(TEA_THRESHOLD, STEPS, coefficients=TEACACHE_WAN_COEFFICIENTS["t2v-1.3B"])
    call, decisions = mine(cache), []

    def recorded(x: np.ndarray, sigma: float) -> np.ndarray:
        before = cache.computed
        out = call(x, sigma)
        decisions.append(cache.computed > before)
        return out

    got = euler(recorded, start)
    assert decisions == expected_decisions
    assert 0 < sum(decisions) < len(decisions)  # measured: 6 of 10 computed
    for ours_flow, their_flow in zip(got, expected, strict=True):
        assert_close(ours_flow, their_flow, tol=TOL)  # measured: 2.7e-5 at worst
    assert largest_change(got, uncached) > 0.02  # the skips visibly change the flows
