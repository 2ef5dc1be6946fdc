"""First Block Cache on the FLUX.2 klein and Qwen-Image transformers over whole short Euler
runs on tiny random models: Qwen-Image against diffusers' own hook (`apply_first_block_cache`
takes its blocks), FLUX.2 against diffusers' model driven by hand with the hook's rule (the
hook registers FLUX.2's blocks but cannot run them: its single blocks return one joint text +
image stream, which the hook subtracts the head block's image tokens from). The same calls
computed and skipped, the same flows to float32 error."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
from diffusers.hooks.hooks import CacheContext, _set_cache_context
from first_block_cache_ref import (
    Call,
    cache_run,
    diffusers_decisions,
    first_block_cache_by_hand,
    largest_change,
)
from flux2_tiny import FLUX2_TINY, tiny_flux2_transformer
from qwenimage_tiny import QWENIMAGE_TINY, tiny_qwenimage_transformer
from sd_tiny import ported
from support import assert_close

import gpucore
import gpustd
from diffusion.models.flux2 import Flux2Transformer2DModel
from diffusion.models.qwen_image import QwenImageTransformer2DModel
from diffusion.models.step_cache import FirstBlockCache

TOL = 1e-3


def test_first_block_cache_qwen_image_equals_diffusers(first_device: gpucore.Device,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """One picture of 5 x 7 patches and 11 text tokens, every block through the cache."""
    threshold = 1.3  # a random tiny model's residuals move far more than a trained one's
    reference = tiny_qwenimage_transformer()
    ours = ported(QwenImageTransformer2DModel, reference, first_device)
    rng = np.random.default_rng(4)
    rows, columns = 5, 7
    text = rng.standard_normal((1, 11, QWENIMAGE_TINY["joint_attention_dim"])).astype(np.float32)
    start = rng.standard_normal((1, rows * columns, QWENIMAGE_TINY["in_channels"])).astype(
        np.float32)

    def mine(cache: FirstBlockCache | None) -> Call:
        def call(x: np.ndarray, sigma: float) -> np.ndarray:
            return ours(gpustd.asarray(x, device=first_device),
                        gpustd.asarray(text, device=first_device), np.array([sigma], np.float32),
                        rows, columns, cache=cache).numpy()
        return call

    expected_decisions = diffusers_decisions(monkeypatch)
    apply_first_block_cache(reference, FirstBlockCacheConfig(threshold=threshold))
    _set_cache_context(reference, CacheContext("cond"))

    def theirs(x: np.ndarray, sigma: float) -> np.ndarray:
        with torch.no_grad():
            return reference(torch.from_numpy(x), torch.from_numpy(text), None,
                             torch.tensor([sigma]), [(1, rows, columns)]).sample.numpy()

    run = cache_run(mine, theirs, start, threshold)
    assert run.decisions == expected_decisions
    assert 0 < sum(run.decisions) < len(run.decisions)  # some calls skipped, some computed
    for ours_flow, their_flow in zip(run.got, run.expected, strict=True):
        assert_close(ours_flow, their_flow, tol=TOL)
    assert largest_change(run.got, run.uncached) > 0.02  # the skips visibly change the flows


def test_first_block_cache_flux2(first_device: gpucore.Device) -> None:
    """One picture of 4 x 5 patches and 7 text tokens."""
    threshold = 1.2
    reference = tiny_flux2_transformer(config={"num_layers": 2, "num_single_layers": 2})
    ours = ported(Flux2Transformer2DModel, reference, first_device)
    rng = np.random.default_rng(3)
    text = rng.standard_normal((1, 7, FLUX2_TINY["joint_attention_dim"])).astype(np.float32)
    rows, cols = np.meshgrid(np.arange(4), np.arange(5), indexing="ij")
    zeros = np.zeros(20)
    img_ids = np.stack([zeros, rows.ravel(), cols.ravel(), zeros], axis=1).astype(np.int64)
    txt_ids = np.stack([np.zeros(7)] * 3 + [np.arange(7)], axis=1).astype(np.int64)
    start = rng.standard_normal((1, 20, FLUX2_TINY["in_channels"])).astype(np.float32)

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
