"""HunyuanImage 2.1's pipeline against diffusers' HunyuanImagePipeline on torch CPU (a tiny
random folder, float32): the base checkpoint with a quoted text in the prompt (the ByT5 glyph
states and the OCR guider: CFG, then APG with momentum from the second step) and the distilled
one (the embedded guidance scale and meanflow's next timestep, no guider); float16 near
float32. diffusers pads Qwen2.5-VL's prompt to 1000 tokens, the transformer masking the
padding; here its limit is cut to the prompt's own length (no prompt is truncated), which keeps
the reference's run short."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
from hunyuanimage_parts_tiny import diffusers_picture, tiny_hunyuanimage_pipeline
from support import assert_close

import gpucore
from diffusion.pipelines.flow.hunyuanimage import HunyuanImagePipeline

TOL = 1e-5  # measured worst |error| / (|e| + rms) of the pictures: 1.8e-6
PROMPT = 'a shop sign that says "OPEN" in red'
SIZE = dict(height=32, width=24, num_inference_steps=3)


def _ours(root: Path, device: gpucore.Device) -> HunyuanImagePipeline:
    return HunyuanImagePipeline.from_pretrained(root / "hunyuanimage", device=device)


def test_base_with_glyph_text_equals_diffusers(first_device: gpucore.Device,
                                               tmp_path: Path) -> None:
    reference = tiny_hunyuanimage_pipeline(tmp_path)
    ours = _ours(tmp_path, first_device)
    got = ours(PROMPT, seed=7, **SIZE)
    assert got.shape == (1, 32, 24, 3)
    assert_close(got, diffusers_picture(reference, PROMPT, **SIZE), tol=TOL)
    # the glyph text and the guidance visibly matter
    other = ours(PROMPT.replace("OPEN", "SHUT"), seed=7, **SIZE)
    unguided = ours(PROMPT, seed=7, guidance_scale=1.0, **SIZE)
    for changed in (other, unguided):
        assert np.abs(changed - got).mean() > 0.01


def test_distilled_equals_diffusers(first_device: gpucore.Device, tmp_path: Path) -> None:
    reference = tiny_hunyuanimage_pipeline(tmp_path, distilled=True)
    ours = _ours(tmp_path, first_device)
    assert ours.distilled and ours.guider is None
    got = ours(PROMPT, seed=7, distilled_guidance_scale=4.0, **SIZE)
    assert_close(got, diffusers_picture(reference, PROMPT, distilled_guidance_scale=4.0,
                                           **SIZE), tol=TOL)
    lower = ours(PROMPT, seed=7, distilled_guidance_scale=1.0, **SIZE)
    assert np.abs(lower - got).mean() > 0.01


def test_sides_refused_in_one_line(first_device: gpucore.Device, tmp_path: Path) -> None:
    tiny_hunyuanimage_pipeline(tmp_path)
    pipe = _ours(tmp_path, first_device)
    with pytest.raises(ValueError, match=r"multiples of 4 for HunyuanImage 2\.1, got 30x24"):
        pipe(PROMPT, height=30, width=24)


def test_float16_near_float32(first_device: gpucore.Device, tmp_path: Path) -> None:
    """Every network in float16 (the VAE, both text encoders, the transformer): the tiny
    model's picture near float32's (measured 9.7e-4 mean, 5.1e-3 worst)."""
    tiny_hunyuanimage_pipeline(tmp_path)
    plain = _ours(tmp_path, first_device)(PROMPT, seed=7, **SIZE)
    half = HunyuanImagePipeline.from_pretrained(tmp_path / "hunyuanimage", device=first_device,
                                                dtype=np.float16)(PROMPT, seed=7, **SIZE)
    assert np.isfinite(half).all()
    assert np.abs(half - plain).mean() < 4e-3 and np.abs(half - plain).max() < 0.02
