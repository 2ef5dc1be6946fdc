"""Step caches on Wan 2.2 Animate's transformer over a short Euler run of a tiny random model
(face blocks after blocks 0 and 2 of 4). Ours takes the face block that follows block 0 as part
of that block, as Wan VACE's hint: First Block Cache decides on the residual with that face
block added, and a skipped call adds the residual of the last computed call (the later blocks
and face blocks) to the first block's output; TeaCache skips the blocks and every face block
alike. The references are diffusers' WanAnimateTransformer3DModel driven by hand with those
rules (first_block_cache_ref). The pose and the face visibly change the flows
(models/test_wan_animate.py); the skips visibly change them here."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
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
from wan_animate_tiny import ANIMATE_TINY, TEXT_TOKENS, tiny_animate_transformer

import gpucore
import gpustd
from diffusion.models.step_cache import TEACACHE_WAN_COEFFICIENTS, BranchCache, TeaCache
from diffusion.models.wan_animate import WanAnimateTransformer3DModel

# a random tiny model's residuals move far more than a trained one's: at 0.8 calls 1, 4 and 5
# of 10 are skipped; TeaCache at 0.1 (its 480P polynomial) computes calls 0, 6, 8 and 9
THRESHOLD, TEA_THRESHOLD = 0.8, 0.1
TOL = 1e-5  # measured: 1.7e-6 (First Block Cache), 6.3e-7 (TeaCache), flows up to 10
LATENT, SIZE = ANIMATE_TINY["latent_channels"], ANIMATE_TINY["motion_encoder_size"]


def _inputs() -> dict[str, np.ndarray]:
    """A video of 3 latent frames (5 face crops), 4 x 6 latents: the noisy latents (their
    condition channels fixed below), text, CLIP states, pose latents, face pixels."""
    rng = np.random.default_rng(4)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    return {"start": normal(1, LATENT, 3, 4, 6), "condition": normal(1, LATENT + 4, 3, 4, 6),
            "text": normal(1, TEXT_TOKENS, ANIMATE_TINY["text_dim"]),
            "image": normal(1, 5, ANIMATE_TINY["image_dim"]),
            "pose": normal(1, LATENT, 2, 4, 6),
            "face": rng.uniform(-1, 1, (1, 3, 5, SIZE, SIZE)).astype(np.float32)}


def _models(device: gpucore.Device, bias: float = 0.0
            ) -> tuple[Any, WanAnimateTransformer3DModel]:
    """diffusers' tiny model (its time embedding's bias raised by `bias`) and ours of it."""
    reference = tiny_animate_transformer()
    with torch.no_grad():
        reference.condition_embedder.time_embedder.linear_2.bias += bias
    ours = WanAnimateTransformer3DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    return reference, ours


def _calls(reference: Any, ours: WanAnimateTransformer3DModel, x: dict[str, np.ndarray]
           ) -> tuple[Call, Any]:
    """diffusers' call and ours(cache) -> call, the flow at latents and sigma (the condition
    channels appended to the latents)."""
    device = ours.device
    t = {k: torch.from_numpy(v) for k, v in x.items()}

    def theirs(latents: np.ndarray, sigma: float) -> np.ndarray:
        sample = torch.cat([torch.from_numpy(latents), t["condition"]], dim=1)
        with torch.no_grad():
            return reference(sample, torch.tensor([1000.0 * sigma]), t["text"],  # type: ignore[no-any-return]
                             t["image"], t["pose"], t["face"]).sample.numpy()

    def on(name: str) -> gpustd.Tensor:
        return gpustd.asarray(x[name], device=device)

    face = ours.encode_face(on("face"))  # once, as the pipeline does
    context, image = ours.encode_text(on("text")), ours.encode_image(on("image"))

    def mine(cache: BranchCache | None) -> Call:
        def call(latents: np.ndarray, sigma: float) -> np.ndarray:
            sample = np.concatenate([latents, x["condition"]], axis=1)
            return ours(gpustd.asarray(sample, device=device),  # type: ignore[no-any-return]
                        np.array([1000.0 * sigma], np.float32), None, context=context,
                        image_context=image, pose_hidden_states=on("pose"),
                        face_context=face, cache=cache).numpy()
        return call

    return theirs, mine


def test_first_block_cache_animate_by_hand(first_device: gpucore.Device) -> None:
    """Ten Euler steps: the same calls computed and skipped as the rule laid over diffusers'
    model by hand, the same flows to float32 error."""
    reference, ours = _models(first_device)
    x = _inputs()
    theirs, mine = _calls(reference, ours, x)
    expected_decisions = vace_first_block_cache_by_hand(reference, THRESHOLD)
    run = cache_run(mine, theirs, x["start"], THRESHOLD)
    assert run.decisions == expected_decisions
    assert 0 < sum(run.decisions) < len(run.decisions)  # some calls skipped, some computed
    for ours_flow, their_flow in zip(run.got, run.expected, strict=True):
        assert_close(ours_flow, their_flow, tol=TOL)
    assert largest_change(run.got, run.uncached) > 0.02  # the skips visibly change the flows


def test_teacache_animate_by_hand(first_device: gpucore.Device) -> None:
    """Ten Euler steps of TeaCache with the image-to-video 480P polynomial (the pipeline's
    for Animate up to 832 x 480), the time embedding's bias raised by 10 so that it moves a
    little each step, as a trained model's: the same calls computed as TeaCache4Wan2.1's rule
    over diffusers' model, the same flows to float32 error."""
    reference, ours = _models(first_device, bias=10.0)
    x = _inputs()
    theirs, mine = _calls(reference, ours, x)
    uncached = euler(mine(None), x["start"])
    table = TEACACHE_WAN_COEFFICIENTS["i2v-480P"]
    expected_decisions = teacache_by_hand(reference, TEA_THRESHOLD, STEPS, table)
    expected = euler(theirs, x["start"])
    cache = TeaCache(TEA_THRESHOLD, STEPS, coefficients=table)
    call, decisions = mine(cache), []

    def recorded(latents: np.ndarray, sigma: float) -> np.ndarray:
        before = cache.computed
        out = call(latents, sigma)
        decisions.append(cache.computed > before)
        return out

    got = euler(recorded, x["start"])
    assert decisions == expected_decisions
    assert 0 < sum(decisions) < len(decisions)
    for ours_flow, their_flow in zip(got, expected, strict=True):
        assert_close(ours_flow, their_flow, tol=TOL)
    assert largest_change(got, uncached) > 0.02  # the skips visibly change the flows
