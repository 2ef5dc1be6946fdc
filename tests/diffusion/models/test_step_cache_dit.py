"""First Block Cache on the Z-Image and Chroma transformers over whole short Euler runs on
tiny random models: Z-Image against diffusers' own hook (`apply_first_block_cache`, which
takes its `layers`; the hook asks each block for a `hidden_states` argument, which
ZImageTransformerBlock names `x`, so the test points it there), Chroma against diffusers'
model driven by hand with the hook's rule (the hook cannot take Chroma's blocks: they are
not in its block registry, and its single blocks return one joint text + image stream where
the rule needs the image tokens apart). The same calls computed and skipped, the same flows
to float32 error."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
from diffusers.hooks._helpers import TransformerBlockRegistry
from diffusers.hooks.hooks import CacheContext, _set_cache_context
from first_block_cache_ref import (
    Call,
    cache_run,
    diffusers_decisions,
    first_block_cache_by_hand,
    largest_change,
)
from flow_tiny import CHROMA_TINY
from sd_tiny import ported, randomized
from support import assert_close
from zimage_tiny import ZIMAGE_TINY, tiny_zimage_transformer

import gpucore
import gpustd
from diffusion.models import ChromaTransformer2DModel
from diffusion.models.step_cache import FirstBlockCache
from diffusion.models.z_image import ZImageTransformer2DModel
from diffusion.pipelines.flow.flux import image_ids

TOL = 1e-3


def test_first_block_cache_zimage_equals_diffusers(first_device: gpucore.Device,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """One picture of 6 x 10 latents and a 9-token caption: the refiners always run, the
    joint `layers` through the cache (diffusers' hook takes `layers`, not the refiners)."""
    threshold = 1.4  # a random tiny model's residuals move far more than a trained one's
    reference = tiny_zimage_transformer()
    ours = ported(ZImageTransformer2DModel, reference, first_device)
    rng = np.random.default_rng(5)
    caption = rng.standard_normal((9, ZIMAGE_TINY["cap_feat_dim"])).astype(np.float32)
    start = rng.standard_normal((1, ZIMAGE_TINY["in_channels"], 6, 10)).astype(np.float32)

    def theirs(x: np.ndarray, sigma: float) -> np.ndarray:
        with torch.no_grad():
            out = reference([torch.from_numpy(x[0, :, None])],
                            torch.tensor([1.0 - sigma]), [torch.from_numpy(caption)]).sample
        return out[0][:, 0].numpy()[None]

    def mine(cache: FirstBlockCache | None) -> Call:
        def call(x: np.ndarray, sigma: float) -> np.ndarray:
            return ours(gpustd.asarray(x, device=first_device),
                        np.array([1.0 - sigma], np.float32),
                        [gpustd.asarray(caption, device=first_device)], cache=cache).numpy()
        return call

    expected_decisions = diffusers_decisions(monkeypatch)
    block = type(reference.layers[0])
    arguments = list(inspect.signature(block.forward).parameters)[1:]
    indices = {name: i for i, name in enumerate(arguments)}
    monkeypatch.setattr(TransformerBlockRegistry.get(block), "_cached_parameter_indices",
                        {**indices, "hidden_states": indices["x"]})
    apply_first_block_cache(reference, FirstBlockCacheConfig(threshold=threshold))
    _set_cache_context(reference, CacheContext("cond"))
    run = cache_run(mine, theirs, start, threshold)
    assert run.decisions == expected_decisions
    assert 0 < sum(run.decisions) < len(run.decisions)  # some calls skipped, some computed
    for ours_flow, their_flow in zip(run.got, run.expected, strict=True):
        assert_close(ours_flow, their_flow, tol=TOL)
    assert largest_change(run.got, run.uncached) > 0.02  # the skips visibly change the flows


def test_first_block_cache_zimage_batch_decides_once(first_device: gpucore.Device) -> None:
    """Two pictures (CFG's rows) in one call: one decision over both pictures' tokens, and
    each picture's output is its own uncached one where the call computes."""
    reference = tiny_zimage_transformer()
    ours = ported(ZImageTransformer2DModel, reference, first_device)
    rng = np.random.default_rng(6)
    captions = [gpustd.asarray(rng.standard_normal((n, ZIMAGE_TINY["cap_feat_dim"]))
                               .astype(np.float32), device=first_device) for n in (9, 40)]
    latents = gpustd.asarray(rng.standard_normal((2, ZIMAGE_TINY["in_channels"], 6, 10))
                             .astype(np.float32), device=first_device)
    t = np.array([0.2, 0.2], np.float32)
    plain = ours(latents, t, captions).numpy()
    cache = FirstBlockCache(0.5)
    first = ours(latents, t, captions, cache=cache).numpy()
    again = ours(latents, t, captions, cache=cache).numpy()  # same input: no change, a skip
    assert (cache.calls, cache.computed) == (2, 1)
    assert_close(first, plain, tol=TOL)
    assert_close(again, plain, tol=TOL)  # the cached residual of the same input


def test_first_block_cache_chroma(first_device: gpucore.Device) -> None:
    threshold = 0.8
    reference = randomized(diffusers.ChromaTransformer2DModel(**CHROMA_TINY), 7)
    ours = ported(ChromaTransformer2DModel, reference, first_device)
    rng = np.random.default_rng(3)
    text = 3 * rng.standard_normal((1, 7, 32)).astype(np.float32)
    img_ids, txt_ids = image_ids(4, 5), np.zeros((7, 3), np.float32)
    start = rng.standard_normal((1, 20, 16)).astype(np.float32)  # 4 x 5 patches

    def mine(cache: FirstBlockCache | None) -> Call:
        def call(x: np.ndarray, sigma: float) -> np.ndarray:
            return ours(gpustd.asarray(x, device=first_device),
                        gpustd.asarray(text, device=first_device), [sigma], img_ids, txt_ids,
                        cache=cache).numpy()
        return call

    expected_decisions = first_block_cache_by_hand(reference, threshold)

    def theirs(x: np.ndarray, sigma: float) -> np.ndarray:
        with torch.no_grad():
            return reference(torch.from_numpy(x), torch.from_numpy(text), torch.tensor([sigma]),
                         torch.from_numpy(img_ids), torch.from_numpy(txt_ids)).sample.numpy()

    run = cache_run(mine, theirs, start, threshold)
    assert run.decisions == expected_decisions
    assert 0 < sum(run.decisions) < len(run.decisions)  # some calls skipped, some computed
    for ours_flow, their_flow in zip(run.got, run.expected, strict=True):
        assert_close(ours_flow, their_flow, tol=TOL)
    assert largest_change(run.got, run.uncached) > 0.02  # the skips visibly change the flows
