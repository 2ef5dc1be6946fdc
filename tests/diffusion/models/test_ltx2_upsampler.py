"""LTX-2's latent upsampler against diffusers' LTX2LatentUpsamplerModel on PyTorch CPU float32:
a tiny random one (8 latent channels, 32 in the middle, one residual block a stage) read from
a diffusers folder (the rational resampler's conv and the plain one's) and from a single
file of the same tensors (its config read off their shapes); the models it does not run
refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from sd_tiny import randomized

import gpucore
from diffusion.loaders.ltx2.upsampler import load_ltx2_upsampler
from diffusion.models.ltx2_upsampler import LTX2LatentUpsamplerModel

# float32, measured: 4.0e-6 at most (outputs ~0.5)
MAX_ERROR = 2e-5


def _reference(rational: bool, seed: int = 3) -> torch.nn.Module:
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel as Ref

    return randomized(Ref(in_channels=8, mid_channels=32, num_blocks_per_stage=1,
                          use_rational_resampler=rational), seed).eval()


def _run(path: Path, latents: np.ndarray) -> np.ndarray:
    weights = load_ltx2_upsampler(path)
    model = LTX2LatentUpsamplerModel(weights.config)
    model.load_state_dict(weights)
    return model(latents).numpy()


@pytest.mark.parametrize("rational", [True, False])
def test_upsampler_equals_diffusers(first_device: gpucore.Device, tmp_path: Path,
                                    rational: bool) -> None:
    """A folder's latent_upsampler/ (LTX2LatentUpsamplePipeline's save) and the same tensors
    as one .safetensors file: diffusers' x2 latents of a random (2, 8, 3, 4, 5) batch."""
    from safetensors.torch import save_file

    reference = _reference(rational)
    reference.save_pretrained(tmp_path / "latent_upsampler")
    save_file(reference.state_dict(), str(tmp_path / "upscaler.safetensors"))
    latents = np.random.default_rng(0).standard_normal((2, 8, 3, 4, 5)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(latents)).numpy()
    for path in (tmp_path, tmp_path / "upscaler.safetensors"):
        got = _run(path, latents)
        assert got.shape == (2, 8, 3, 8, 10)
        assert np.abs(got - expected).max() < MAX_ERROR


def test_other_upsamplers_refused() -> None:
    with pytest.raises(ValueError, match="not the spatial x2 one"):
        LTX2LatentUpsamplerModel({"temporal_upsample": True, "spatial_upsample": False})
    with pytest.raises(ValueError, match=r"scale 1\.5 is not supported"):
        LTX2LatentUpsamplerModel({"spatial_scale": 1.5, "rational_resampler": True})


def test_not_an_upsampler(tmp_path: Path) -> None:
    from diffusion.loaders.errors import WeightsError

    with pytest.raises(WeightsError, match="no latent_upsampler/ here"):
        load_ltx2_upsampler(tmp_path)
