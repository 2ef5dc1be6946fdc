"""FLUX.1 Canny/Depth dev (Flux Tools: the control map's latents concatenated to the packed
latents' channels) against diffusers' FluxControlPipeline on a tiny random transformer whose
input is twice its output; the map's VAE draw and the noise from one torch CPU generator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from flow_tiny import FLUX_TINY
from PIL import Image
from sd_tiny import CLIP_TINY, randomized
from support import assert_close

import gpucore
from diffusion.loaders.flow.folder import flow_family
from diffusion.pipelines.flow.flux import FluxPipeline

TOL = 2e-3  # the SD pipeline tests' picture tolerance


def _tools_pipeline(root: Path, reference: Any) -> Any:
    """The tiny FLUX.1 dev pipeline with a Tools transformer (in 32 = 16 latent + 16 control
    channels, out 16), the map's input weights scaled up so that it visibly matters; saved
    to root."""
    transformer = randomized(diffusers.FluxTransformer2DModel(
        **{**FLUX_TINY, "in_channels": 32, "pooled_projection_dim": CLIP_TINY["hidden_size"]},
        out_channels=16, guidance_embeds=True), 17)
    with torch.no_grad():  # the control half of the input scaled until the map shows
        transformer.x_embedder.weight[:, 16:] *= 12
    parts = {name: reference.components[name] for name in (
        "scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")}
    pipe = diffusers.FluxControlPipeline(**parts, transformer=transformer)
    pipe.save_pretrained(root / "flux-tools")
    return pipe


def test_flux_tools_match_diffusers(first_device: gpucore.Device,
                                    tiny_flux_dev: tuple[Path, Any], tmp_path: Path) -> None:
    reference = _tools_pipeline(tmp_path, tiny_flux_dev[1])
    reference.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(4)
    control = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    settings = dict(height=16, width=24, num_inference_steps=2, guidance_scale=10.0,
                    max_sequence_length=16)

    def run_reference(image: np.ndarray) -> np.ndarray:
        return reference("a red circle", control_image=Image.fromarray(image),
                         generator=torch.Generator().manual_seed(5), output_type="np",
                         **settings).images

    expected = run_reference(control)
    ours = FluxPipeline.from_pretrained(tmp_path / "flux-tools", device=first_device)
    assert ours.control_channels == 16
    got = ours("a red circle", control_image=control, seed=5, **settings)
    assert_close(got, expected, tol=TOL)
    other = run_reference(255 - control)
    assert np.abs(expected - other).mean() > 20 * TOL  # the map matters
    with pytest.raises(ValueError, match="needs its control image"):
        ours("a red circle", seed=5, **settings)
    assert flow_family(tmp_path / "flux-tools") == "flux-dev"  # loads as FLUX.1 dev
