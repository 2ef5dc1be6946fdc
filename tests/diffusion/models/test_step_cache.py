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
from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS
from first_block_cache_ref import diffusers_decisions
from flow_tiny import FLUX_TINY
from sd_tiny import randomized, state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models import FluxTransformer2DModel, SD3Transformer2DModel, step_cache
from diffusion.models.step_cache import (
    CacheSpec,
    FirstBlockCache,
    MagCache,
    StepCache,
    TeaCache,
)
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
    expected_decisions = diffusers_decisions(monkeypatch)
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


def _teacache_flux(reference: Any, threshold: float, steps: int) -> Callable[..., Any]:
    """diffusers' FLUX model run as TeaCache's `teacache_flux.py` replaces its forward (torch,
    its names): the rescaled relative L1 distance of block 0's modulated input accumulated,
    the first and last of `steps` computed."""
    rescale = np.poly1d([4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00,
                         2.64230861e-01])
    model: dict[str, Any] = {"cnt": 0, "accumulated_rel_l1_distance": 0.0}

    def forward(x: torch.Tensor, text: torch.Tensor, pooled: torch.Tensor, t: torch.Tensor,
                img_ids: torch.Tensor, txt_ids: torch.Tensor) -> tuple[torch.Tensor, bool]:
        hidden_states = reference.x_embedder(x)
        temb = reference.time_text_embed(t * 1000, pooled)
        encoder_hidden_states = reference.context_embedder(text)
        rotary = reference.pos_embed(torch.cat((txt_ids, img_ids), dim=0))
        modulated_inp = reference.transformer_blocks[0].norm1(hidden_states, emb=temb)[0]
        if model["cnt"] in (0, steps - 1):
            should_calc = True
            model["accumulated_rel_l1_distance"] = 0
        else:
            previous = model["previous_modulated_input"]
            model["accumulated_rel_l1_distance"] += rescale(
                ((modulated_inp - previous).abs().mean() / previous.abs().mean()).item())
            should_calc = not model["accumulated_rel_l1_distance"] < threshold
            if should_calc:
                model["accumulated_rel_l1_distance"] = 0
        model["previous_modulated_input"] = modulated_inp
        model["cnt"] = (model["cnt"] + 1) % steps
        if not should_calc:
            hidden_states = hidden_states + model["previous_residual"]
        else:
            ori_hidden_states = hidden_states
            for block in (*reference.transformer_blocks, *reference.single_transformer_blocks):
                encoder_hidden_states, hidden_states = block(
                    hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                    temb=temb, image_rotary_emb=rotary)
            model["previous_residual"] = hidden_states - ori_hidden_states
        return reference.proj_out(reference.norm_out(hidden_states, temb)), should_calc

    return forward


def test_teacache_flux(first_device: gpucore.Device) -> None:
    """TeaCache over two 12-step pictures in a row, against its authors' algorithm."""
    threshold = 0.8
    reference, ours = _flux_pair(first_device)
    _, mine, start = _flux_calls(reference, ours, first_device, 1)
    rng = np.random.default_rng(3)
    text, pooled = rng.standard_normal((1, 7, 32)), rng.standard_normal((1, 24))
    cached_reference = _teacache_flux(reference, threshold, STEPS)
    expected_decisions: list[bool] = []

    def theirs(x: np.ndarray, sigma: float, branch: int, _: Any) -> np.ndarray:
        with torch.no_grad():
            out, computed = cached_reference(
                torch.from_numpy(x), *(torch.from_numpy(a.astype(np.float32))
                                       for a in (text, pooled)),
                torch.tensor([sigma]), torch.from_numpy(image_ids(4, 5)), torch.zeros(7, 3))
        expected_decisions.append(computed)
        return out.numpy()

    expected = _euler(theirs, start, 1, [None]) + _euler(theirs, -start, 1, [None])
    cache = TeaCache(threshold, STEPS)
    recorded, decisions = _our_decisions([cache], mine)
    got = _euler(recorded, start, 1, [cache]) + _euler(recorded, -start, 1, [cache])
    assert decisions == expected_decisions
    assert 0 < sum(decisions) < len(decisions)
    for ours_flow, their_flow in zip(got, expected, strict=True):
        assert_close(ours_flow, their_flow, tol=TOL)


def test_step_cache_spec_and_summary() -> None:
    assert CacheSpec.parse("fbc:0.08") == CacheSpec("fbc", 0.08)
    assert CacheSpec.parse("MagCache") == CacheSpec("magcache", 0.06)
    assert CacheSpec.parse("fbc").label == "fbc 0.12"
    assert CacheSpec.parse("teacache") == CacheSpec("teacache", 0.4)
    assert [CacheSpec.of(off) for off in (None, "", "None", "off")] == [None] * 4
    assert CacheSpec.of("fbc:0.1") == CacheSpec("fbc", 0.1)
    assert CacheSpec.parse("teacache 0.25, 9/20 steps computed") == CacheSpec("teacache", 0.25)
    for bad, said in (("deepcache:0.4", "not one of"), ("fbc:x", "not a number"),
                      ("fbc:-1", r"in \[0, 10\)")):
        with pytest.raises(ValueError, match=said):
            CacheSpec.parse(bad)
    cache = StepCache(CacheSpec("fbc", 0.1), 4)
    branch = cache.branch()
    branch.calls, branch.computed = 28, 14
    assert cache.summary() == "fbc 0.1, 14/28 steps computed"
    cache.branch()
    assert cache.summary() == "fbc 0.1, 14/28 model calls computed"
