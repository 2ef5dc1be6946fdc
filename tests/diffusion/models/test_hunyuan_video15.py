"""The HunyuanVideo 1.5 transformer against diffusers' HunyuanVideo15Transformer3DModel on
torch CPU float32 (tiny random weights, loaded from the folder diffusers' save_pretrained
writes): odd 3 x 6 x 10 latents, a batch of two prompts of different lengths (7 and 3 of 9
tokens kept) with glyph texts of 3 and 0 of 5 tokens, image-to-video's SigLIP states and
text-to-video's zeros, float32 and float16, meanflow's timestep_r."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from hunyuan_video15_tiny import (
    HUNYUAN_VIDEO15_MEANFLOW,
    HUNYUAN_VIDEO15_TINY,
    tiny_hunyuan_video15_transformer,
    write_hunyuan_video15_transformer,
)
from safetensors.numpy import load_file
from sd_tiny import ported
from support import assert_close, counted

import gpucore
from diffusion.models.hunyuan_video15 import HunyuanVideo15Transformer3DModel
from diffusion.models.step_cache import FirstBlockCache

FRAMES, HEIGHT, WIDTH, TOKENS, GLYPHS, IMAGES = 3, 6, 10, 9, 5, 4
CHANNELS, TEXT, GLYPH, IMAGE = (HUNYUAN_VIDEO15_TINY[k] for k in (
    "in_channels", "text_embed_dim", "text_embed_2_dim", "image_embed_dim"))
# measured up to 4.6e-6 over 3 inputs x image/no image x 3 timesteps (float32 rounding of
# the two sides)
TOL = 1e-5
# float16 weights and stream against diffusers' float32, meanflow: up to 3.5e-3 over the same
TOL_F16 = 7e-3


def _inputs(seed: int, *, image: bool = True) -> dict[str, Any]:
    """diffusers' keyword inputs for a batch of 2: latents + condition (2, 9, 3, 6, 10), text
    states with 7 and 3 kept tokens, glyph states with 3 and none, SigLIP states (zeros:
    text-to-video, as the pipeline passes them)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((2, TOKENS), np.int64)
    mask[0, :7], mask[1, :3] = 1, 1
    glyph_mask = np.zeros((2, GLYPHS), np.int64)
    glyph_mask[0, :3] = 1
    images = rng.standard_normal((2, IMAGES, IMAGE)) if image else np.zeros((2, IMAGES, IMAGE))
    return dict(
        hidden_states=rng.standard_normal((2, CHANNELS, FRAMES, HEIGHT, WIDTH)).astype(
            np.float32),
        timestep=np.array([700.0, 700.0], np.float32),
        encoder_hidden_states=rng.standard_normal((2, TOKENS, TEXT)).astype(np.float32),
        encoder_attention_mask=mask,
        encoder_hidden_states_2=rng.standard_normal((2, GLYPHS, GLYPH)).astype(np.float32),
        encoder_attention_mask_2=glyph_mask, image_embeds=images.astype(np.float32))


def _reference(model: Any, inputs: dict[str, Any]) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: None if v is None else torch.from_numpy(np.asarray(v))
                        for k, v in inputs.items()}, return_dict=False)[0].numpy()


def _ours(model: HunyuanVideo15Transformer3DModel, inputs: dict[str, Any]) -> np.ndarray:
    return model(**inputs).numpy().astype(np.float32)


def _differs(a: np.ndarray, b: np.ndarray, share: float) -> bool:
    """Whether b is visibly not a: a mean change over `share` of a's mean size (the tiny
    model's velocity is mostly its final layer's shift, the same for every token)."""
    return bool(np.abs(a - b).mean() > share * np.abs(a).mean())


def test_hunyuan_video15_image_to_video(device: gpucore.Device, tmp_path: Path) -> None:
    """Image-to-video's inputs, loaded from diffusers' folder; the text, the glyph text and
    the image each visibly change the velocity, their padding's values do not."""
    folder = tmp_path / "transformer"
    reference = write_hunyuan_video15_transformer(folder)
    ours = HunyuanVideo15Transformer3DModel(json.loads((folder / "config.json").read_text()),
                                            device=device)
    ours.load_state_dict(load_file(folder / "diffusion_pytorch_model.safetensors"))
    inputs = _inputs(1)
    got = _ours(ours, inputs)
    assert got.shape == (2, HUNYUAN_VIDEO15_TINY["out_channels"], FRAMES, HEIGHT, WIDTH)
    assert_close(got, _reference(reference, inputs), tol=TOL)
    rng = np.random.default_rng(5)
    for name, share in (("encoder_hidden_states", 0.02), ("encoder_hidden_states_2", 0.005),
                        ("image_embeds", 0.03)):
        changed = _ours(ours, {**inputs, name: rng.standard_normal(inputs[name].shape)})
        assert _differs(got[:1], changed[:1], share), name
        if name == "encoder_hidden_states_2":  # sample 1 keeps no glyph token
            np.testing.assert_array_equal(changed[1], got[1])
    padded = {**inputs, "encoder_hidden_states": inputs["encoder_hidden_states"].copy(),
              "encoder_hidden_states_2": inputs["encoder_hidden_states_2"].copy()}
    padded["encoder_hidden_states"][0, 7:] *= 100
    padded["encoder_hidden_states_2"][0, 3:] *= 100
    np.testing.assert_array_equal(_ours(ours, padded), got)


def test_hunyuan_video15_text_to_video(device: gpucore.Device) -> None:
    """Text-to-video's all-zero image states (masked out: None is the same), a timestep per
    sample, a mask that drops token 0; then one prompt alone (no key mask)."""
    reference = tiny_hunyuan_video15_transformer()
    ours = ported(HunyuanVideo15Transformer3DModel, reference, device)
    inputs = {**_inputs(2, image=False), "timestep": np.array([250.0, 400.0], np.float32)}
    inputs["encoder_attention_mask"] = np.array([[0, 1, 1, 0, 1, 1, 1, 0, 0],
                                                 [1, 1, 1, 1, 1, 0, 0, 0, 0]])
    got = _ours(ours, inputs)
    assert_close(got, _reference(reference, inputs), tol=TOL)
    np.testing.assert_array_equal(_ours(ours, {**inputs, "image_embeds": None}), got)
    single = {k: v[1:] for k, v in inputs.items()}
    assert_close(_ours(ours, single), _reference(reference, single), tol=TOL)


def test_hunyuan_video15_meanflow_f16(f16_device: gpucore.Device) -> None:
    """Meanflow's timestep_r embedding, float16 weights against diffusers' float32, with the
    image states; timestep_r visibly matters."""
    reference = tiny_hunyuan_video15_transformer(**HUNYUAN_VIDEO15_MEANFLOW)
    ours = ported(HunyuanVideo15Transformer3DModel, reference, f16_device, dtype=np.float16)
    inputs = {**_inputs(3), "timestep": np.array([750.0, 750.0], np.float32),
              "timestep_r": np.array([500.0, 500.0], np.float32)}
    got = _ours(ours, inputs)
    assert_close(got, _reference(reference, inputs), tol=TOL_F16)
    changed = {**inputs, "timestep_r": np.array([0.0, 0.0], np.float32)}
    assert _differs(got, _ours(ours, changed), 0.03)


def test_hunyuan_video15_patches_and_cache(device: gpucore.Device) -> None:
    """2 x 2 spatial, 1 temporal patches against diffusers; a step cache wired to the blocks:
    threshold 0 computes every call (the uncached velocity, bitwise), a huge one skips the
    blocks after the first at the second call."""
    reference = tiny_hunyuan_video15_transformer(patch_size=2)
    ours = ported(HunyuanVideo15Transformer3DModel, reference, device)
    inputs = _inputs(6)
    assert_close(_ours(ours, inputs), _reference(reference, inputs), tol=TOL)
    later = {**inputs, "timestep": np.array([300.0, 300.0], np.float32)}
    plain = _ours(ours, later)
    for threshold, computed in ((0.0, 2), (1e9, 1)):
        cache = FirstBlockCache(threshold)
        ours(**inputs, cache=cache)
        second = ours(**later, cache=cache).numpy()
        assert cache.computed == computed
        assert (second == plain).all() == (computed == 2)


def test_hunyuan_video15_text_prepared_once(device: gpucore.Device) -> None:
    """prepare_text's PromptText (image, glyph and prompt states), made once per prompt,
    gives the step of the raw inputs bitwise; a step reusing it saves exactly the dispatches
    making it takes (the gathers, the image and glyph projections and tags, the refiner's
    projections), and its uploads plus the blocks' key mask (kept per size)."""
    ours = ported(HunyuanVideo15Transformer3DModel, tiny_hunyuan_video15_transformer(), device)
    inputs = _inputs(7)
    names = ("encoder_hidden_states", "encoder_attention_mask", "encoder_hidden_states_2",
             "encoder_attention_mask_2", "image_embeds")
    with counted(device) as made:
        text = ours.prepare_text(*(inputs[name] for name in names))
    prepared = {**inputs, **dict.fromkeys(names), "encoder_hidden_states": text}
    ours(**prepared)  # the first step keeps the key mask of this size
    later = np.array([300.0, 300.0], np.float32)
    with counted(device) as again:
        fresh = ours(**{**inputs, "timestep": later}).numpy()
    with counted(device) as shared:
        got = ours(**{**prepared, "timestep": later}).numpy()
    np.testing.assert_array_equal(got, fresh)
    assert again[0] - shared[0] == made[0] > 10
    assert again[1] - shared[1] == made[1] + 1 and made[1] >= 5  # + the key mask
    with pytest.raises(ValueError, match="text is of 2 prompts for 1 latents"):
        ours(**{**prepared, "hidden_states": inputs["hidden_states"][:1]})
    with pytest.raises(ValueError, match="PromptText, which holds"):
        ours(**{**prepared, "image_embeds": inputs["image_embeds"]})


def test_hunyuan_video15_refuses(device: gpucore.Device) -> None:
    """Inputs that do not fit the checkpoint: one-line errors."""
    ours = ported(HunyuanVideo15Transformer3DModel, tiny_hunyuan_video15_transformer(), device)
    inputs = _inputs(4)
    cases = [({"timestep_r": np.array([0.0])}, "meanflow"),
             ({"encoder_attention_mask": np.zeros((2, TOKENS))}, "keeps no token"),
             ({"encoder_attention_mask": np.ones((2, 4))}, r"\(batch, tokens\)"),
             ({"encoder_attention_mask_2": None}, "needs encoder_attention_mask_2"),
             ({"image_embeds": np.ones((2, IMAGES, 7))}, "image_embeds must be"),
             ({"hidden_states": np.zeros((2, 3, FRAMES, HEIGHT, WIDTH))}, "hidden_states must")]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            ours(**{**inputs, **change})
    with pytest.raises(ValueError, match="rope_axes_dim"):
        HunyuanVideo15Transformer3DModel({**HUNYUAN_VIDEO15_TINY, "rope_axes_dim": (8, 8)})
