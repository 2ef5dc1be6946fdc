"""A tiny SD checkpoint saved by torch (the tar format of torch < 0.4, the one read by the most
code of our own) draws the same picture as the same weights in .safetensors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
from ldm_files import CLIP_TINY, UNET_TINY, VAE_TINY, diffusers, randomized, transformers, write_ldm
from test_torch_tar_and_mmap import _save_tar

from diffusion import load_pipeline


def test_tar_checkpoint_draws_like_its_safetensors(tmp_path, first_device):
    ckpt = write_ldm(tmp_path / "m.safetensors",
                     randomized(diffusers.UNet2DConditionModel(**UNET_TINY), 1),
                     randomized(diffusers.AutoencoderKL(**VAE_TINY), 4),
                     randomized(transformers.CLIPTextModel(transformers.CLIPTextConfig(
                         **CLIP_TINY)), 5))
    _save_tar({"state_dict": ckpt, "global_step": np.int64(10)}, tmp_path / "m.ckpt")
    pictures = [np.asarray(load_pipeline(tmp_path / name, device=first_device).txt2img(
        "a red circle", steps=1, cfg_scale=1.0, seed=3, width=32, height=32).images[0])
        for name in ("m.safetensors", "m.ckpt")]
    assert pictures[0].shape == (32, 32, 3) and pictures[0].std() > 0
    np.testing.assert_array_equal(pictures[1], pictures[0])
