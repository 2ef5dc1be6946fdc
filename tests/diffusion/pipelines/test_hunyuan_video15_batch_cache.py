"""HunyuanVideo 1.5 text-to-video (a tiny HunyuanVideo15Pipeline folder, as
test_hunyuan_video15's) against diffusers' pipeline on PyTorch CPU float32: First Block Cache
over a few Euler steps with CFG, against diffusers' own hook (`enable_cache(
FirstBlockCacheConfig)`, the model's blocks registered as HunyuanVideo's are), the same calls
skipped and the same latents; a batch of two prompts of different lengths (the ragged texts
joined with a key mask) against diffusers' batched run, its latents and each video's frames."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from diffusers.hooks import FirstBlockCacheConfig
from first_block_cache_ref import diffusers_decisions

import gpucore
from diffusion.models import step_cache
from diffusion.models.step_cache import CacheSpec, StepCache
from diffusion.pipelines.video.hunyuan_video15 import HunyuanVideo15Pipeline

SIGN = 'a neon sign that says "OPEN" in a dark street'
CAT = "a cat"  # fewer Qwen tokens, and no quoted text: no glyph tokens
SIZE = {"height": 32, "width": 48, "num_frames": 5}  # test_hunyuan_video15's
# |ours - diffusers| of the final latents (up to about 25 in size), float32: measured 6.0e-5
# mean, 1.8e-4 max with the cache; 4.2e-5 and 1.4e-4 for the batch
MEAN, MAX = 2e-4, 6e-4
# and of the batch's frames in [0, 1]: measured 7e-7 mean, 5.1e-6 max
FRAMES_MEAN, FRAMES_MAX = 3e-6, 2e-5


def _diffusers(reference: Any, prompt: Any, steps: int) -> np.ndarray:
    """diffusers' final latents (B, C, F, h, w)."""
    with torch.no_grad():
        return reference(prompt, generator=torch.Generator().manual_seed(7), output_type="latent",
                         num_inference_steps=steps, **SIZE).frames.numpy()


def _ours(pipe: HunyuanVideo15Pipeline, prompt: Any, steps: int, **kwargs: Any
          ) -> tuple[np.ndarray, np.ndarray]:
    """(our final latents, our frames)."""
    seen: list[np.ndarray] = []
    frames = pipe(prompt, seed=7, num_inference_steps=steps,
                  callback=lambda done, total, x: seen.append(x.copy()), **SIZE, **kwargs)
    return seen[-1], frames


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, HunyuanVideo15Pipeline]:
    """(diffusers' pipeline, ours of its folder)."""
    from hunyuan_video15_pipe_tiny import tiny_hunyuan_video15_pipeline

    root = tmp_path_factory.mktemp("tiny-hv15-batch")
    reference = tiny_hunyuan_video15_pipeline(root)
    return reference, HunyuanVideo15Pipeline.from_pretrained(root / "hv15")


def test_first_block_cache_matches_diffusers_hook(first_device: gpucore.Device,
                                                  tiny: tuple[Any, HunyuanVideo15Pipeline],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
    from diffusers.models.transformers.transformer_hunyuan_video15 import (
        HunyuanVideo15TransformerBlock,
    )

    reference, pipe = tiny
    steps, threshold = 3, 0.3
    # diffusers 0.42's hook knows no HunyuanVideo 1.5 block: registered as HunyuanVideo's
    # double-stream block (it returns (hidden_states, encoder_hidden_states) the same way)
    TransformerBlockRegistry._register()
    monkeypatch.setattr(TransformerBlockRegistry, "_registry",
                        dict(TransformerBlockRegistry._registry))  # given back after the test
    TransformerBlockRegistry.register(HunyuanVideo15TransformerBlock, TransformerBlockMetadata(
        return_hidden_states_index=0, return_encoder_hidden_states_index=1))
    theirs = diffusers_decisions(monkeypatch)
    reference.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        expected = _diffusers(reference, SIGN, steps)
    finally:
        reference.transformer.disable_cache()
    ours: list[bool] = []
    run = step_cache.FirstBlockCache.run

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        before = self.computed
        out = run(self, *args, **kwargs)
        ours.append(self.computed > before)
        return out

    monkeypatch.setattr(step_cache.FirstBlockCache, "run", spy)
    cache = StepCache(CacheSpec("fbc", threshold), steps)
    got, _ = _ours(pipe, SIGN, steps, cache=cache)
    # the prompt's and the negative prompt's calls in turn: the last step's both skipped (their
    # first block's residual moved by 18% since step 1's; step 2's by 550%)
    assert theirs == [True] * 4 + [False] * 2
    assert ours == theirs
    assert cache.summary() == "fbc 0.3, 4/6 model calls computed"
    # the skipped step's latents diffusers' (computing it instead moves them by 0.86 mean)
    assert np.abs(got - expected).mean() < MEAN
    assert np.abs(got - expected).max() < MAX


def test_batch_of_ragged_prompts_matches_diffusers(first_device: gpucore.Device,
                                                   tiny: tuple[Any, HunyuanVideo15Pipeline]
                                                   ) -> None:
    reference, pipe = tiny
    expected = _diffusers(reference, [SIGN, CAT], 2)
    got, frames = _ours(pipe, [SIGN, CAT], 2)
    # (the key mask matters: without it, the short prompt's padding read as text, the latents
    # are 0.97 apart on average)
    assert np.abs(got - expected).mean() < MEAN
    assert np.abs(got - expected).max() < MAX
    # diffusers 0.42's VAE decodes one video at a time (its mid-block attention mask does not
    # broadcast over a batch): each video decoded alone
    vae = reference.vae
    for b in range(2):
        with torch.no_grad():
            video = vae.decode(torch.from_numpy(expected[b:b + 1]) / vae.config.scaling_factor
                               ).sample
        want = (video / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 3, 0).numpy()
        assert np.abs(frames[b] - want).mean() < FRAMES_MEAN
        assert np.abs(frames[b] - want).max() < FRAMES_MAX
    # the two prompts give two videos (their latents 2.5 apart on average)
    assert np.abs(expected[0] - expected[1]).mean() > 1
