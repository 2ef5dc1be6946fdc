"""Stability's single-file SD3/3.5 MMDiT loads to the tensors diffusers' own single-file
conversion gives, and to the config of the model it came from. Host logic only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers
from flow_tiny import sai_checkpoint
from safetensors.torch import save_file
from sd_tiny import randomized

from diffusion.loaders.errors import WeightsError
from diffusion.loaders.flow.sd3_file import load_sd3_file

pytestmark = pytest.mark.nodevice

SD35_TINY = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8,
                 num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                 pooled_projection_dim=24, out_channels=4, pos_embed_max_size=12,
                 qk_norm="rms_norm", dual_attention_layers=(0, 1))


def test_sd3_file_loads_like_diffusers_conversion(tmp_path: Path) -> None:
    reference = randomized(diffusers.SD3Transformer2DModel(**SD35_TINY), 9)
    reference = reference.to(torch.bfloat16).to(torch.float32)  # what a bf16 file holds
    checkpoint = sai_checkpoint(reference)
    path = tmp_path / "sd3.5_medium.safetensors"
    save_file({"model.diffusion_model." + k: v.to(torch.bfloat16).contiguous()
               for k, v in checkpoint.items()}, str(path))
    weights = load_sd3_file(path)
    expected = convert_sd3_transformer_checkpoint_to_diffusers(dict(checkpoint))
    assert sorted(weights) == sorted(expected) == sorted(reference.state_dict())
    for key, value in expected.items():
        assert weights.shape(key) == tuple(value.shape), key
        np.testing.assert_array_equal(weights[key], value.numpy(), err_msg=key)
    for field, value in reference.config.items():
        if not field.startswith("_") and field != "sample_size":
            wanted = tuple(value) if isinstance(value, list) else value
            assert weights.config[field] == wanted, field


def test_not_an_sd3_file(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"double_blocks.0.x": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="not an SD3"):
        load_sd3_file(path)
