"""FramePack's transformer against diffusers' HunyuanVideoFramepackTransformer3DModel on
torch CPU (tests/hunyuan_video_framepack_tiny.py's tiny random model): 3 noisy frames of 6 x
10 latents packed after 16 frames 4x coarse, 2 frames 2x coarse and 2 clean ones (padded by
the coarse patches: 6 x 10 is no multiple of 4 or 8), F1's frame indices, a batch of two
prompts of 7 and 4 of 9 tokens behind 4 SigLIP image tokens; float32 and float16."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from hunyuan_video_framepack_tiny import FRAMEPACK_TINY, tiny_framepack_transformer
from sd_tiny import ported
from support import assert_close

import gpucore
from diffusion.models.hunyuan_video_framepack import HunyuanVideoFramepackTransformer3DModel

FRAMES, HEIGHT, WIDTH, TOKENS, IMAGE_TOKENS = 3, 6, 10, 9, 4
CHANNELS, TEXT, POOLED, IMAGE = (FRAMEPACK_TINY[k] for k in (
    "in_channels", "text_embed_dim", "pooled_projection_dim", "image_proj_dim"))
TOL = 1e-5  # float32 rounding of the two sides: measured up to 3.5e-6
TOL_F16 = 5e-3  # float16 weights and stream against diffusers' float32: measured up to 2.5e-3
# F1's packing of a 3-frame window: prefix 0, 4x 1..16, 2x 17..18, 1x 19, the latents 20..22
INDICES = dict(indices_latents=np.arange(20, 23), indices_latents_clean=np.array([0, 19]),
               indices_latents_history_2x=np.arange(17, 19),
               indices_latents_history_4x=np.arange(1, 17))


def _inputs(seed: int) -> dict[str, Any]:
    """diffusers' keyword inputs for a batch of 2."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((2, TOKENS), np.int64)
    mask[0, :7], mask[1, :4] = 1, 1

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)
    return dict(
        hidden_states=normal(2, CHANNELS, FRAMES, HEIGHT, WIDTH),
        timestep=np.array([700.0, 700.0], np.float32),
        encoder_hidden_states=normal(2, TOKENS, TEXT), encoder_attention_mask=mask,
        pooled_projections=normal(2, POOLED), image_embeds=normal(2, IMAGE_TOKENS, IMAGE),
        guidance=np.array([10000.0, 10000.0], np.float32),
        latents_clean=normal(2, CHANNELS, 2, HEIGHT, WIDTH),
        latents_history_2x=normal(2, CHANNELS, 2, HEIGHT, WIDTH),
        latents_history_4x=normal(2, CHANNELS, 16, HEIGHT, WIDTH), **INDICES)


def _reference(model: Any, inputs: dict[str, Any]) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()},
                     return_dict=False)[0].numpy()


def _ours(model: HunyuanVideoFramepackTransformer3DModel, inputs: dict[str, Any]) -> np.ndarray:
    return model(**inputs).numpy().astype(np.float32)


def _differs(a: np.ndarray, b: np.ndarray, share: float) -> bool:
    """Whether b is visibly not a: a mean change over `share` of a's mean size."""
    return bool(np.abs(a - b).mean() > share * np.abs(a).mean())


def test_framepack_equals_diffusers(device: gpucore.Device) -> None:
    """The image states and each history part visibly change the velocity; a prepared
    history and text give the raw inputs' step bitwise."""
    reference = tiny_framepack_transformer()
    ours = ported(HunyuanVideoFramepackTransformer3DModel, reference, device)
    inputs = _inputs(1)
    got = _ours(ours, inputs)
    assert got.shape == (2, CHANNELS, FRAMES, HEIGHT, WIDTH)
    assert_close(got, _reference(reference, inputs), tol=TOL)
    rng = np.random.default_rng(5)
    for name in ("image_embeds", "latents_clean", "latents_history_2x", "latents_history_4x"):
        other = {**inputs, name: rng.standard_normal(inputs[name].shape).astype(np.float32)}
        assert _differs(got, _ours(ours, other), 0.02), name
    grid = (FRAMES, HEIGHT // 2, WIDTH // 2)
    history = ours.prepare_history(grid, INDICES["indices_latents"], {
        "clean": (inputs["latents_clean"], INDICES["indices_latents_clean"]),
        "2x": (inputs["latents_history_2x"], INDICES["indices_latents_history_2x"]),
        "4x": (inputs["latents_history_4x"], INDICES["indices_latents_history_4x"])}, 2)
    text = ours.prepare_text(inputs["encoder_hidden_states"], inputs["encoder_attention_mask"],
                             inputs["image_embeds"])
    prepared = {k: inputs[k] for k in ("hidden_states", "timestep", "pooled_projections",
                                       "guidance")}
    np.testing.assert_array_equal(
        ours(**prepared, encoder_hidden_states=text, history=history).numpy(), got)


def test_framepack_f16_one_prompt(f16_device: gpucore.Device) -> None:
    """float16 weights against diffusers' float32, one prompt (diffusers' batch-1 path)."""
    reference = tiny_framepack_transformer()
    ours = ported(HunyuanVideoFramepackTransformer3DModel, reference, f16_device,
                  dtype=np.float16)
    inputs = {k: v[1:] if k not in INDICES else v for k, v in _inputs(3).items()}
    assert_close(_ours(ours, inputs), _reference(reference, inputs), tol=TOL_F16)


def test_framepack_refuses(device: gpucore.Device) -> None:
    """Inputs and configs that do not fit: one-line errors."""
    ours = ported(HunyuanVideoFramepackTransformer3DModel, tiny_framepack_transformer(), device)
    inputs = _inputs(4)
    cases = [({"image_embeds": None}, "image_embeds is required"),
             ({"image_embeds": np.zeros((2, 3, 5))}, "image_embeds must be"),
             ({"latents_clean": np.zeros((2, CHANNELS, 2, 4, 4))}, "clean history latents"),
             ({"indices_latents": np.arange(5)}, "indices_latents must")]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            ours(**{**inputs, **change})
    with pytest.raises(ValueError, match="has_clean_x_embedder"):
        HunyuanVideoFramepackTransformer3DModel({**FRAMEPACK_TINY, "has_image_proj": False})
