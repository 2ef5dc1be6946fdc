"""The HunyuanVideo (1.0) transformer against diffusers' HunyuanVideoTransformer3DModel on
torch CPU (tests/hunyuan_video_tiny.py's tiny random model): 3 frames of 6 x 10 latents in
2 x 2 patches (a 3 x 3 x 5 grid), a batch of two prompts of 7 and 4 of 9 tokens, the pooled
CLIP projection and the distilled guidance, float32 and float16; a checkpoint without the
guidance embedding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from hunyuan_video_tiny import HUNYUAN_VIDEO_TINY, tiny_hunyuan_video_transformer
from sd_tiny import ported
from support import assert_close

import gpucore
from diffusion.models.hunyuan_video import HunyuanVideoTransformer3DModel
from diffusion.models.step_cache import FirstBlockCache

FRAMES, HEIGHT, WIDTH, TOKENS = 3, 6, 10, 9
CHANNELS, TEXT, POOLED = (HUNYUAN_VIDEO_TINY[k] for k in (
    "in_channels", "text_embed_dim", "pooled_projection_dim"))
TOL = 1e-5  # float32 rounding of the two sides: measured up to 2.9e-6 (3 inputs x 3 timesteps)
TOL_F16 = 5e-3  # float16 weights and stream against diffusers' float32: measured up to 2.2e-3


def _inputs(seed: int) -> dict[str, Any]:
    """diffusers' keyword inputs for a batch of 2: latents (2, 4, 3, 6, 10), text states
    with 7 and 4 kept tokens (right padding), pooled CLIP states, guidance 6 x 1000."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((2, TOKENS), np.int64)
    mask[0, :7], mask[1, :4] = 1, 1
    return dict(
        hidden_states=rng.standard_normal((2, CHANNELS, FRAMES, HEIGHT, WIDTH)).astype(
            np.float32),
        timestep=np.array([700.0, 700.0], np.float32),
        encoder_hidden_states=rng.standard_normal((2, TOKENS, TEXT)).astype(np.float32),
        encoder_attention_mask=mask,
        pooled_projections=rng.standard_normal((2, POOLED)).astype(np.float32),
        guidance=np.array([6000.0, 6000.0], np.float32))


def _reference(model: Any, inputs: dict[str, Any]) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()},
                     return_dict=False)[0].numpy()


def _ours(model: HunyuanVideoTransformer3DModel, inputs: dict[str, Any]) -> np.ndarray:
    return model(**inputs).numpy().astype(np.float32)


def _differs(a: np.ndarray, b: np.ndarray, share: float) -> bool:
    """Whether b is visibly not a: a mean change over `share` of a's mean size."""
    return bool(np.abs(a - b).mean() > share * np.abs(a).mean())


def test_hunyuan_video_equals_diffusers(device: gpucore.Device) -> None:
    """The text and the pooled projection each visibly change the velocity (the fixture's
    premise), the padding's values do not."""
    reference = tiny_hunyuan_video_transformer()
    ours = ported(HunyuanVideoTransformer3DModel, reference, device)
    inputs = _inputs(1)
    got = _ours(ours, inputs)
    assert got.shape == (2, CHANNELS, FRAMES, HEIGHT, WIDTH)
    assert_close(got, _reference(reference, inputs), tol=TOL)
    rng = np.random.default_rng(5)
    other_text = {**inputs, "encoder_hidden_states": rng.standard_normal((2, TOKENS, TEXT))}
    assert _differs(got, _ours(ours, other_text), 0.04)
    other_pooled = {**inputs, "pooled_projections": rng.standard_normal((2, POOLED))}
    assert _differs(got, _ours(ours, other_pooled), 0.1)
    padded = {**inputs, "encoder_hidden_states": inputs["encoder_hidden_states"].copy()}
    padded["encoder_hidden_states"][0, 7:] *= 100
    np.testing.assert_array_equal(_ours(ours, padded), got)


def test_hunyuan_video_f16(f16_device: gpucore.Device) -> None:
    """float16 weights against diffusers' float32; the guidance visibly matters."""
    reference = tiny_hunyuan_video_transformer()
    ours = ported(HunyuanVideoTransformer3DModel, reference, f16_device, dtype=np.float16)
    inputs = _inputs(3)
    got = _ours(ours, inputs)
    assert_close(got, _reference(reference, inputs), tol=TOL_F16)
    changed = {**inputs, "guidance": np.array([1000.0, 1000.0], np.float32)}
    assert _differs(got, _ours(ours, changed), 0.1)


def test_hunyuan_video_without_guidance(device: gpucore.Device) -> None:
    """A checkpoint without the guidance embedding ignores the guidance the pipeline passes
    (as diffusers); a timestep per sample, equal prompt lengths (no key mask), then one
    prompt alone, against diffusers."""
    reference = tiny_hunyuan_video_transformer(guidance_embeds=False)
    ours = ported(HunyuanVideoTransformer3DModel, reference, device)
    inputs = {**_inputs(2), "timestep": np.array([250.0, 900.0], np.float32)}
    inputs["encoder_attention_mask"] = np.ones((2, TOKENS), np.int64)
    inputs["encoder_attention_mask"][:, 5:] = 0
    assert_close(_ours(ours, inputs), _reference(reference, inputs), tol=TOL)
    single = {k: v[1:] for k, v in inputs.items()}
    assert_close(_ours(ours, single), _reference(reference, single), tol=TOL)


def test_hunyuan_video_cache_and_prepared_text(device: gpucore.Device) -> None:
    """prepare_text's PromptText gives the step of the raw inputs bitwise; a step cache of
    threshold 0 computes every call, a huge one skips the blocks after the first."""
    ours = ported(HunyuanVideoTransformer3DModel, tiny_hunyuan_video_transformer(), device)
    inputs = _inputs(6)
    later = {**inputs, "timestep": np.array([300.0, 300.0], np.float32)}
    plain = _ours(ours, later)
    text = ours.prepare_text(inputs["encoder_hidden_states"], inputs["encoder_attention_mask"])
    prepared = {**later, "encoder_hidden_states": text, "encoder_attention_mask": None}
    np.testing.assert_array_equal(_ours(ours, prepared), plain)
    for threshold, computed in ((0.0, 2), (1e9, 1)):
        cache = FirstBlockCache(threshold)
        ours(**inputs, cache=cache)
        second = ours(**later, cache=cache).numpy()
        assert cache.computed == computed
        assert (second == plain).all() == (computed == 2)


def test_hunyuan_video_refuses(device: gpucore.Device) -> None:
    """Inputs and configs that do not fit: one-line errors."""
    ours = ported(HunyuanVideoTransformer3DModel, tiny_hunyuan_video_transformer(), device)
    inputs = _inputs(4)
    left_padded = np.zeros((2, TOKENS), np.int64)
    left_padded[:, 3:] = 1
    cases = [({"guidance": None}, "guidance-distilled"),
             ({"pooled_projections": None}, "pooled_projections is required"),
             ({"pooled_projections": np.zeros((2, 5))}, r"pooled_projections must be"),
             ({"encoder_attention_mask": left_padded}, "right padding"),
             ({"encoder_attention_mask": np.zeros((2, TOKENS))}, "keeps no token"),
             ({"timestep": np.zeros(3)}, "timestep must be"),
             ({"hidden_states": np.zeros((2, CHANNELS, 2, 5, 6))}, "hidden_states must be")]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            ours(**{**inputs, **change})
    with pytest.raises(ValueError, match="image_condition_type 'mask'"):
        HunyuanVideoTransformer3DModel({**HUNYUAN_VIDEO_TINY, "image_condition_type": "mask"})
