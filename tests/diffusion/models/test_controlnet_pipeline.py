"""A whole picture with a ControlNet unit against diffusers' StableDiffusionControlNetPipeline
(tiny models, the model folder's scheduler, the same random draws: see test_sd_pipeline)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from sd_tiny import UNET_TINY, write_pipeline  # noqa: E402
from support import assert_input_matters  # noqa: E402
from test_controlnet import tiny_controlnet  # noqa: E402

import gpucore  # noqa: E402
from diffusion import load_pipeline  # noqa: E402
from diffusion.loaders.control.controlnet_file import load_controlnet  # noqa: E402
from diffusion.pipelines.control import ControlUnit  # noqa: E402

SIZE = 32  # the tiny VAE halves: 16x16 latents; the tiny ControlNet's image embedding too
PROMPT, NEGATIVE = "a lighthouse at dusk, oil painting", "blurry"


def _same_draws(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rng = np.random.default_rng(seed)

    def randn_tensor(shape: Any, generator: Any = None, device: Any = None, dtype: Any = None,
                     layout: Any = None) -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal(tuple(shape))).to(dtype or torch.float32)

    for name in ("diffusers.pipelines.controlnet.pipeline_controlnet",
                 "diffusers.models.autoencoders.vae"):
        monkeypatch.setattr(importlib.import_module(name), "randn_tensor", randn_tensor)


def test_controlnet_txt2img_matches_diffusers(first_device: gpucore.Device, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook is host logic over ops checked on every adapter: the first adapter."""
    model_dir = write_pipeline(tmp_path / "sd")
    controlnet = tiny_controlnet(UNET_TINY, seed=12)
    controlnet.save_pretrained(tmp_path / "controlnet")
    rng = np.random.default_rng(13)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    control = ((np.hypot(x - 14, y - 17) < 9) * 255).astype(np.uint8)
    control = np.repeat(control[:, :, None], 3, axis=2) | rng.integers(0, 30, (SIZE, SIZE, 3),
                                                                        dtype=np.uint8)

    ours = load_pipeline(model_dir, device=first_device)
    unit = ControlUnit(load_controlnet(tmp_path / "controlnet", device=first_device), control,
                       weight=0.8, guidance_end=0.6, schedule="diffusers")
    result = ours.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=3, cfg_scale=7.5, seed=7,
                          width=SIZE, height=SIZE, sampler="diffusers", control=[unit])

    reference = diffusers.StableDiffusionControlNetPipeline.from_pretrained(
        model_dir, controlnet=controlnet, safety_checker=None, requires_safety_checker=False)
    reference.set_progress_bar_config(disable=True)

    def run_reference(scale: float) -> np.ndarray:
        _same_draws(monkeypatch, 7)
        return reference(PROMPT, Image.fromarray(control), negative_prompt=NEGATIVE,
                         num_inference_steps=3, guidance_scale=7.5, height=SIZE, width=SIZE,
                         controlnet_conditioning_scale=scale, control_guidance_end=0.6,
                         output_type="np").images

    expected = run_reference(0.8)
    got = np.stack(result.images).astype(np.int16)
    want = np.round(expected * 255).astype(np.int16)
    diff = np.abs(got - want)
    assert diff.mean() < 0.5 and diff.max() <= 4, (diff.mean(), diff.max())
    assert got.std() > 5
    assert_input_matters(expected, run_reference(0.0), "the ControlNet")
