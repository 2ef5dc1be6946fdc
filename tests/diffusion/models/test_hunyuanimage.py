"""The HunyuanImage 2.1 transformer against diffusers' HunyuanImageTransformer2DModel on torch
CPU float32 (tiny random weights, loaded from the folder diffusers' save_pretrained writes):
an odd 5 x 7 latent, a batch of two prompts of different lengths (6 and 3 of 9 tokens kept)
with glyph texts of 3 and 0 of 5 tokens, float32 and float16, the distilled checkpoint's
guidance and meanflow inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from hunyuanimage_tiny import (
    HUNYUANIMAGE_DISTILLED,
    HUNYUANIMAGE_TINY,
    tiny_hunyuanimage_transformer,
    write_hunyuanimage_transformer,
)
from safetensors.numpy import load_file
from sd_tiny import ported
from support import assert_close, counted

import gpucore
from diffusion.models.hunyuanimage import HunyuanImageTransformer2DModel
from diffusion.models.step_cache import FirstBlockCache

HEIGHT, WIDTH, TOKENS, GLYPHS = 5, 7, 9, 5
CHANNELS, TEXT, GLYPH = (HUNYUANIMAGE_TINY[k] for k in ("in_channels", "text_embed_dim",
                                                         "text_embed_2_dim"))
# measured up to 1.2e-6 over 4 inputs x 3 timesteps (float32 rounding of the two sides)
TOL = 5e-6
# float16 weights and stream against diffusers' float32, the distilled inputs: measured up to
# 2.7e-3 over the same 12 cases
TOL_F16 = 5e-3


def _inputs(seed: int) -> dict[str, Any]:
    """diffusers' keyword inputs for a batch of 2: latents (2, 8, 5, 7), text states with 6
    and 3 kept tokens, glyph states with 3 and none."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((2, TOKENS), np.int64)
    mask[0, :6], mask[1, :3] = 1, 1
    glyph_mask = np.zeros((2, GLYPHS), np.int64)
    glyph_mask[0, :3] = 1
    return dict(
        hidden_states=rng.standard_normal((2, CHANNELS, HEIGHT, WIDTH)).astype(np.float32),
        timestep=np.array([700.0, 700.0], np.float32),
        encoder_hidden_states=rng.standard_normal((2, TOKENS, TEXT)).astype(np.float32),
        encoder_attention_mask=mask,
        encoder_hidden_states_2=rng.standard_normal((2, GLYPHS, GLYPH)).astype(np.float32),
        encoder_attention_mask_2=glyph_mask)


def _reference(model: Any, inputs: dict[str, Any]) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: None if v is None else torch.from_numpy(np.asarray(v))
                        for k, v in inputs.items()}, return_dict=False)[0].numpy()


def _ours(model: HunyuanImageTransformer2DModel, inputs: dict[str, Any]) -> np.ndarray:
    return model(**inputs).numpy().astype(np.float32)


def _differs(a: np.ndarray, b: np.ndarray, share: float) -> bool:
    """Whether b is visibly not a: a mean change over `share` of a's mean size (the tiny
    model's flow is mostly its final layer's shift, the same for every token)."""
    return bool(np.abs(a - b).mean() > share * np.abs(a).mean())


def test_hunyuanimage_equals_diffusers(device: gpucore.Device, tmp_path: Path) -> None:
    """The text and the glyph text each visibly change the flow, their padding's values do
    not."""
    reference = write_hunyuanimage_transformer(tmp_path / "transformer")
    folder = tmp_path / "transformer"
    ours = HunyuanImageTransformer2DModel(json.loads((folder / "config.json").read_text()),
                                          device=device)
    ours.load_state_dict(load_file(folder / "diffusion_pytorch_model.safetensors"))
    inputs = _inputs(1)
    got = _ours(ours, inputs)
    assert got.shape == (2, CHANNELS, HEIGHT, WIDTH)
    assert_close(got, _reference(reference, inputs), tol=TOL)
    # what the test's premise needs: the text and the glyph text each visibly matter
    rng = np.random.default_rng(5)
    other_text = {**inputs, "encoder_hidden_states": rng.standard_normal((2, TOKENS, TEXT))}
    assert _differs(got, _ours(ours, other_text), 0.03)
    other_glyph = {**inputs, "encoder_hidden_states_2": rng.standard_normal((2, GLYPHS, GLYPH))}
    changed = _ours(ours, other_glyph)
    assert _differs(got[:1], changed[:1], 0.01)
    np.testing.assert_array_equal(changed[1], got[1])  # sample 1 keeps no glyph token
    padded = {**inputs, "encoder_hidden_states": inputs["encoder_hidden_states"].copy()}
    padded["encoder_hidden_states"][0, 6:] *= 100
    padded["encoder_hidden_states_2"] = inputs["encoder_hidden_states_2"].copy()
    padded["encoder_hidden_states_2"][0, 3:] *= 100
    np.testing.assert_array_equal(_ours(ours, padded), got)


def test_hunyuanimage_first_token_padding(device: gpucore.Device) -> None:
    """A mask that drops token 0 (diffusers' refiner still lets every query see it), equal
    prompt lengths (no key mask) and a timestep per sample; then one prompt alone, against
    diffusers."""
    reference = tiny_hunyuanimage_transformer()
    ours = ported(HunyuanImageTransformer2DModel, reference, device)
    inputs = {**_inputs(2), "timestep": np.array([250.0, 400.0], np.float32)}
    inputs["encoder_attention_mask"] = np.array([[0, 1, 1, 0, 1, 1, 1, 0, 0],
                                                 [1, 1, 1, 1, 1, 0, 0, 0, 0]])
    inputs["encoder_attention_mask_2"] = np.ones((2, GLYPHS), np.int64)
    assert_close(_ours(ours, inputs), _reference(reference, inputs), tol=TOL)
    # one prompt (the pipeline's call for each of CFG's branches): its padding sliced off
    single = {k: v[1:] for k, v in inputs.items()}
    assert_close(_ours(ours, single), _reference(reference, single), tol=TOL)


def test_hunyuanimage_distilled_f16(f16_device: gpucore.Device) -> None:
    """The distilled checkpoint's guidance and meanflow timestep_r embeddings, float16
    weights against diffusers' float32; each input visibly matters."""
    reference = tiny_hunyuanimage_transformer(**HUNYUANIMAGE_DISTILLED)
    ours = ported(HunyuanImageTransformer2DModel, reference, f16_device, dtype=np.float16)
    inputs = {**_inputs(3), "timestep": np.array([750.0, 750.0], np.float32),
              "guidance": np.array([3250.0, 3250.0], np.float32),
              "timestep_r": np.array([500.0, 500.0], np.float32)}
    got = _ours(ours, inputs)
    assert_close(got, _reference(reference, inputs), tol=TOL_F16)
    for name, value in (("guidance", [1000.0, 1000.0]), ("timestep_r", [0.0, 0.0])):
        changed = {**inputs, name: np.array(value, np.float32)}
        assert _differs(got, _ours(ours, changed), 0.03), name


def test_hunyuanimage_step_cache(device: gpucore.Device) -> None:
    """A step cache wired to the blocks: threshold 0 computes every call (the uncached flow,
    bitwise); a huge one skips the blocks after the first at the second call."""
    ours = ported(HunyuanImageTransformer2DModel, tiny_hunyuanimage_transformer(), device)
    inputs = _inputs(6)
    later = {**inputs, "timestep": np.array([300.0, 300.0], np.float32)}
    plain = _ours(ours, later)
    for threshold, computed in ((0.0, 2), (1e9, 1)):
        cache = FirstBlockCache(threshold)
        ours(**inputs, cache=cache)
        second = ours(**later, cache=cache).numpy()
        assert cache.computed == computed
        assert (second == plain).all() == (computed == 2)


def test_hunyuanimage_text_prepared_once(device: gpucore.Device) -> None:
    """prepare_text's PromptText, made once per prompt, gives the step of the raw inputs
    bitwise; a step reusing it saves exactly the dispatches making it takes (the gathers,
    the refiner's projections, ByT5's), and its uploads: the prompt's states, the gather
    indices, the masks (the blocks' key mask kept per size after the first step)."""
    ours = ported(HunyuanImageTransformer2DModel, tiny_hunyuanimage_transformer(), device)
    inputs = _inputs(7)
    raw = (inputs["encoder_hidden_states"], inputs["encoder_attention_mask"],
           inputs["encoder_hidden_states_2"], inputs["encoder_attention_mask_2"])
    with counted(device) as made:
        text = ours.prepare_text(*raw)
    prepared = {**inputs, "encoder_hidden_states": text, "encoder_attention_mask": None,
                "encoder_hidden_states_2": None, "encoder_attention_mask_2": None}
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


def test_hunyuanimage_refuses(device: gpucore.Device) -> None:
    """Inputs that do not fit the checkpoint: one-line errors."""
    ours = ported(HunyuanImageTransformer2DModel, tiny_hunyuanimage_transformer(), device)
    inputs = _inputs(4)
    cases = [({"guidance": np.array([3000.0])}, "no guidance embedding"),
             ({"timestep_r": np.array([0.0])}, "meanflow"),
             ({"encoder_attention_mask": np.zeros((2, TOKENS))}, "keeps no token"),
             ({"encoder_attention_mask": np.ones((2, 4))}, r"\(batch, tokens\)"),
             ({"hidden_states": np.zeros((2, 3, HEIGHT, WIDTH))}, "hidden_states must be")]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            ours(**{**inputs, **change})
    with pytest.raises(ValueError, match="only 2D latents"):
        HunyuanImageTransformer2DModel({**HUNYUANIMAGE_TINY, "patch_size": (1, 1, 1)})
