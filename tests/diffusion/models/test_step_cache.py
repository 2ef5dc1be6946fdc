"""Step caching (First Block Cache, MagCache) against diffusers' cache hooks on tiny random
FLUX and SD3 transformers over whole short Euler runs: the same calls computed and skipped,
the same flows to float32 error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig
from diffusers.hooks import first_block_cache as diffusers_fbc
from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS
from flow_tiny import FLUX_TINY
from sd_tiny import randomized, state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models import FluxTransformer2DModel, SD3Transformer2DModel, step_cache
from diffusion.models.step_cache import CacheSpec, FirstBlockCache, MagCache, StepCache
from diffusion.pipelines.flow.flux import image_ids

TOL = 1e-3
STEPS = 12
FLUX_CACHE_TINY = {**FLUX_TINY, "num_layers": 2, "num_single_layers": 2}
SD3_CACHE_TINY = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=3,
                      attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                      caption_projection_dim=16, pooled_projection_dim=24, out_channels=4,
                      pos_embed_max_size=12)

Call = Callable[[np.ndarray, float, int, Any], np.ndarray]  # (x, sigma, branch, cache)


def _euler(call: Call, x: np.ndarray, branches: int, caches: list[Any]) -> list[np.ndarray]:
    """STEPS Euler steps from sigma 1 to 0; each step predicts every branch (the guidance
    branches: separate inputs, separate caches) and moves along their mean. The flows of
    every call, in order."""
    sigmas = np.linspace(1.0, 0.0, STEPS + 1).astype(np.float32)
    flows = []
    for i in range(STEPS):
        step = [call(x, float(sigmas[i]), b, caches[b]) for b in range(branches)]
        flows += step
        x = x + (sigmas[i + 1] - sigmas[i]) * np.mean(step, axis=0)
    return flows


def _flux_pair(device: gpucore.Device) -> tuple[Any, FluxTransformer2DModel]:
    reference = randomized(diffusers.FluxTransformer2DModel(**FLUX_CACHE_TINY), 7)
    ours = FluxTransformer2DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    return reference, ours


def _flux_calls(reference: Any, ours: FluxTransformer2DModel, device: gpucore.Device,
                branches: int) -> tuple[Call, Call, np.ndarray]:
    """The reference's and our FLUX call on a 4 x 5 patch latent, a prompt per branch."""
    rng = np.random.default_rng(3)
    texts = [rng.standard_normal((1, 7, 32)).astype(np.float32) for _ in range(branches)]
    pooled = [rng.standard_normal((1, 24)).astype(np.float32) for _ in range(branches)]
    img_ids, txt_ids = image_ids(4, 5), np.zeros((7, 3), np.float32)
    names = ["cond", "uncond"]

    def theirs(x: np.ndarray, sigma: float, branch: int, _: Any) -> np.ndarray:
        with torch.no_grad(), reference.cache_context(names[branch]):
            return reference(torch.from_numpy(x), torch.from_numpy(texts[branch]),
                             torch.from_numpy(pooled[branch]), torch.tensor([sigma]),
                             torch.from_numpy(img_ids), torch.from_numpy(txt_ids)).sample.numpy()

    def mine(x: np.ndarray, sigma: float, branch: int, cache: Any) -> np.ndarray:
        return ours(*(gpustd.asarray(a, device=device) for a in (x, texts[branch],
                                                                 pooled[branch])),
                    [sigma], img_ids, txt_ids, cache=cache).numpy()

    return theirs, mine, rng.standard_normal((1, 20, 16)).astype(np.float32)


def _spy_fbc(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """diffusers' First Block Cache decisions (True: computed), recorded as it makes them."""
    decisions: list[bool] = []
    original = diffusers_fbc.FBCHeadBlockHook._should_compute_remaining_blocks

    def spy(self: Any, residual: Any) -> bool:
        decisions.append(original(self, residual))
        return decisions[-1]

    monkeypatch.setattr(diffusers_fbc.FBCHeadBlockHook, "_should_compute_remaining_blocks", spy)
    return decisions


def _our_decisions(caches: list[Any], mine: Call) -> tuple[Call, list[bool]]:
    """`mine` recording, per call, whether its cache computed the blocks."""
    decisions: list[bool] = []

    def recorded(x: np.ndarray, sigma: float, branch: int, cache: Any) -> np.ndarray:
        before = cache.computed
        out = mine(x, sigma, branch, cache)
        decisions.append(cache.computed > before)
        return out

    return recorded, decisions


@pytest.mark.parametrize("branches", [1, 2], ids=["one-branch", "cond-uncond"])
def test_first_block_cache_flux_equals_diffusers(first_device: gpucore.Device,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 branches: int) -> None:
    threshold = 0.6  # a random tiny model's residuals move far more than a trained one's
    reference, ours = _flux_pair(first_device)
    theirs, mine, start = _flux_calls(reference, ours, first_device, branches)
    uncached = _euler(mine, start, branches, [None] * branches)
    expected_decisions = _spy_fbc(monkeypatch)
    reference.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    expected = _euler(theirs, start, branches, [None] * branches)
    caches = [FirstBlockCache(threshold) for _ in range(branches)]
    recorded, decisions = _our_decisions(caches, mine)
    got = _euler(recorded, start, branches, caches)
    assert decisions == expected_decisions
    assert 0 < sum(decisions) < len(decisions)  # some calls skipped, some computed
    for ours_flow, their_flow in zip(got, expected, strict=True):
        assert_close(ours_flow, their_flow, tol=TOL)
    assert max(float(np.abs(a - b).max()) for a, b in zip(got, uncached)) > 0.05
    assert sum(c.calls for c in caches) == STEPS * branches


def _sd3_first_block_cache(reference: Any, threshold: float) -> Call:
    """diffusers' SD3 model run by hand with First Block Cache's rule (its hook cannot take
    SD3's last block, whose text output is None): torch, float32, its formula verbatim."""
    state: dict[str, Any] = {}

    def call(x: torch.Tensor, text: torch.Tensor, pooled: torch.Tensor,
             t: torch.Tensor) -> tuple[torch.Tensor, bool]:
        hidden = reference.pos_embed(x)
        temb = reference.time_text_embed(t, pooled)
        context = reference.context_embedder(text)
        first, *rest = reference.transformer_blocks
        context, head = first(hidden_states=hidden, encoder_hidden_states=context, temb=temb)
        residual = head - hidden
        previous = state.get("head_residual")
        computed = previous is None or float(
            (residual - previous).abs().mean() / previous.abs().mean()) > threshold
        if computed:
            out = head
            for block in rest:
                context, out = block(hidden_states=out, encoder_hidden_states=context, temb=temb)
            state.update(head_residual=residual, tail_residual=out - head)
        else:
            out = head + state["tail_residual"]
        out = reference.proj_out(reference.norm_out(out, temb))
        batch, _, height, width = x.shape
        out = out.reshape(batch, height // 2, width // 2, 2, 2, -1)
        return torch.einsum("nhwpqc->nchpwq", out).reshape(batch, -1, height, width), computed

    return call


def test_first_block_cache_sd3(first_device: gpucore.Device) -> None:
    """SD3 with batched CFG rows (one call per step) and its context_pre_only last block."""
    threshold = 0.8
    reference = randomized(diffusers.SD3Transformer2DModel(**SD3_CACHE_TINY), 9)
    ours = SD3Transformer2DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(4)
    text = rng.standard_normal((2, 7, 32)).astype(np.float32)
    pooled = rng.standard_normal((2, 24)).astype(np.float32)
    start = rng.standard_normal((2, 4, 10, 6)).astype(np.float32)
    cached_reference = _sd3_first_block_cache(reference, threshold)
    expected_decisions: list[bool] = []

    def theirs(x: np.ndarray, sigma: float, branch: int, _: Any) -> np.ndarray:
        with torch.no_grad():
            out, computed = cached_reference(torch.from_numpy(x), torch.from_numpy(text),
                                             torch.from_numpy(pooled),
                                             torch.full((2,), 1000 * sigma))
        expected_decisions.append(computed)
        return out.numpy()

    def mine(x: np.ndarray, sigma: float, branch: int, cache: Any) -> np.ndarray:
        return ours(*(gpustd.asarray(a, device=first_device) for a in (x, text, pooled)),
                    np.full(2, 1000 * sigma, np.float32), cache=cache).numpy()

    expected = _euler(theirs, start, 1, [None])
    cache = FirstBlockCache(threshold)
    recorded, decisions = _our_decisions([cache], mine)
    got = _euler(recorded, start, 1, [cache])
    assert decisions == expected_decisions
    assert 0 < sum(decisions) < len(decisions)
    for ours_flow, their_flow in zip(got, expected, strict=True):
        assert_close(ours_flow, their_flow, tol=TOL)


def test_mag_cache_flux_equals_diffusers(first_device: gpucore.Device) -> None:
    """MagCache with FLUX's ratios stretched to 12 steps, two pictures in a row (its state
    starts again after the last step)."""
    reference, ours = _flux_pair(first_device)
    theirs, mine, start = _flux_calls(reference, ours, first_device, 1)
    config = dict(threshold=0.08, max_skip_steps=2, retention_ratio=0.2)
    reference.enable_cache(MagCacheConfig(**config, num_inference_steps=STEPS,
                                          mag_ratios=FLUX_MAG_RATIOS))
    expected = _euler(theirs, start, 1, [None]) + _euler(theirs, -start, 1, [None])
    assert np.allclose(np.asarray(step_cache.FLUX_MAG_RATIOS, np.float32),
                       FLUX_MAG_RATIOS.numpy())
    cache = MagCache(config["threshold"], STEPS, max_skip_steps=2, retention_ratio=0.2)
    recorded, decisions = _our_decisions([cache], mine)
    got = _euler(recorded, start, 1, [cache]) + _euler(recorded, -start, 1, [cache])
    assert 0 < sum(decisions) < len(decisions)
    assert decisions[:STEPS] == decisions[STEPS:]
    for ours_flow, their_flow in zip(got, expected, strict=True):
        assert_close(ours_flow, their_flow, tol=TOL)


def test_step_cache_spec_and_summary() -> None:
    assert CacheSpec.parse("fbc:0.08") == CacheSpec("fbc", 0.08)
    assert CacheSpec.parse("MagCache") == CacheSpec("magcache", 0.06)
    assert CacheSpec.parse("fbc").label == "fbc 0.12"
    for bad, said in (("teacache:0.4", "not one of"), ("fbc:x", "not a number"),
                      ("fbc:-1", r"in \[0, 10\)")):
        with pytest.raises(ValueError, match=said):
            CacheSpec.parse(bad)
    cache = StepCache(CacheSpec("fbc", 0.1), 4)
    branch = cache.branch()
    branch.calls, branch.computed = 28, 14
    assert cache.summary() == "fbc 0.1, 14/28 steps computed"
    cache.branch()
    assert cache.summary() == "fbc 0.1, 14/28 model calls computed"
