"""First Block Cache on the Qwen-Image 2.1 transformer over a whole short Euler run on a tiny
random model, against diffusers' own hook (`apply_first_block_cache`) on diffusers' model in
its prefix-cached mode: the prompt's keys and values made once (kv_cache_mode "extract",
before the hook), every call then the picture's tokens alone ("cached"), as ours runs. diffusers
registers no block metadata for QwenImage21TransformerBlock, so the test gives it (one tensor
in, one out: Z-Image's). The same calls computed and skipped, the same flows to float32 error;
a threshold of 0 computes every call, the uncached flows bitwise."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.hooks.hooks import CacheContext, _set_cache_context
from diffusers.models.transformers import transformer_qwenimage21 as diffusers21
from first_block_cache_ref import Call, cache_run, diffusers_decisions, euler, largest_change
from qwenimage21_tiny import QWENIMAGE21_TINY
from sd_tiny import ported, randomized
from support import assert_close

import gpucore
import gpustd
from diffusion.models.qwen_image21 import QwenImage21Transformer2DModel
from diffusion.models.step_cache import FirstBlockCache

# float32, relative to the flows' rms (~56 on this random model): 1.15e-3 measured on an H200
# (Dawn), where the cached residual carries each step's rounding into the next
TOL = 1.5e-3


def test_first_block_cache_qwen_image21_equals_diffusers(
        first_device: gpucore.Device, monkeypatch: pytest.MonkeyPatch) -> None:
    """One picture of 4 x 5 latents and 9 text tokens, three blocks (one between the head
    and the tail)."""
    threshold = 1.5  # a random tiny model's residuals move far more than a trained one's
    block = diffusers21.QwenImage21TransformerBlock
    with pytest.raises(ValueError, match="not registered"):  # why the test registers it
        TransformerBlockRegistry.get(block)
    metadata = TransformerBlockMetadata(return_hidden_states_index=0,
                                        return_encoder_hidden_states_index=None)
    metadata._cls = block
    monkeypatch.setitem(TransformerBlockRegistry._registry, block, metadata)
    reference = randomized(diffusers21.QwenImage21Transformer2DModel(
        **{**QWENIMAGE21_TINY, "num_layers": 3}), 11, scale=0.4)
    ours = ported(QwenImage21Transformer2DModel, reference, first_device)
    rng = np.random.default_rng(5)
    rows, columns, length = 4, 5, 9
    text = rng.standard_normal((1, length, QWENIMAGE21_TINY["context_in_dim"])).astype(
        np.float32)
    start = rng.standard_normal((1, rows * columns, QWENIMAGE21_TINY["in_channels"])).astype(
        np.float32)
    prefix = ours.prefix(gpustd.asarray(text, device=first_device))

    def mine(cache: FirstBlockCache | None) -> Call:
        def call(x: np.ndarray, sigma: float) -> np.ndarray:
            return ours(gpustd.asarray(x, device=first_device), np.array([sigma], np.float32),
                        rows, columns, prefix, cache=cache).numpy()
        return call

    # diffusers' pipeline arguments: one slot a 2 x 2 latents after the prompt
    slots = torch.cat([torch.zeros(1, length, dtype=torch.bool),
                       torch.ones(1, rows * columns // 4, dtype=torch.bool)], dim=1)
    kv = diffusers21.QwenImage21KVCache(3)

    def reference_call(x: np.ndarray, sigma: float, mode: str) -> np.ndarray:
        with torch.no_grad():
            out = reference(torch.from_numpy(x), torch.from_numpy(text), torch.tensor([sigma]),
                            [[(1, rows, columns)]], slots, kv_cache=kv,
                            kv_cache_mode=mode).sample
        return out[:, -rows * columns:].numpy()

    reference_call(start, 1.0, "extract")  # the prompt's keys and values, unhooked
    expected_decisions = diffusers_decisions(monkeypatch)
    apply_first_block_cache(reference, FirstBlockCacheConfig(threshold=threshold))
    _set_cache_context(reference, CacheContext("cond"))

    run = cache_run(mine, lambda x, sigma: reference_call(x, sigma, "cached"), start,
                    threshold)
    assert run.decisions == expected_decisions
    assert 0 < sum(run.decisions) < len(run.decisions)  # some calls skipped, some computed
    for ours_flow, their_flow in zip(run.got, run.expected, strict=True):
        assert_close(ours_flow, their_flow, tol=TOL)
    assert largest_change(run.got, run.uncached) > 0.02  # the skips visibly change the flows
    exact = FirstBlockCache(0.0)
    for cached, plain in zip(euler(mine(exact), start), run.uncached, strict=True):
        np.testing.assert_array_equal(cached, plain)
    assert exact.computed == exact.calls
