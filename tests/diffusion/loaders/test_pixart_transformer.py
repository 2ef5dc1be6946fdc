"""PixArt transformers in the original (PixArt repositories') layout read under diffusers'
names: every tensor equal to diffusers' own (PixArt-α 1024's size embedders too), the config
from the shapes; another file refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
from pixart_tiny import PIXART_ALPHA_TINY, original_layout, tiny_pixart_transformer
from safetensors.torch import save_file
from sd_tiny import state_dict

from diffusion.loaders import WeightsError
from diffusion.loaders.pixart import load_pixart_transformer, pixart_file_family

# the tiny models' heads are 12 wide (PixArt XL's 72)
TINY_HEADS = {"attention_head_dim": 12}


@pytest.mark.nodevice
def test_alpha_file_is_diffusers(tmp_path: Path) -> None:
    """α 1024's file under ComfyUI's model.diffusion_model.: diffusers' tensors (the unused
    y_embedding dropped) and config fields from the shapes."""
    reference = tiny_pixart_transformer(**PIXART_ALPHA_TINY)
    file = tmp_path / "pixart_alpha.safetensors"
    save_file({"model.diffusion_model." + k: v
               for k, v in original_layout(reference).items()}, str(file))
    assert pixart_file_family(file) == "pixart-sigma"
    weights = load_pixart_transformer(file, config=TINY_HEADS)
    expected = {k: v for k, v in state_dict(reference).items() if k != "pos_embed.pos_embed"}
    assert sorted(weights) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value)
    fields = ("num_attention_heads", "attention_head_dim", "in_channels", "out_channels",
              "num_layers", "cross_attention_dim", "caption_channels", "patch_size",
              "use_additional_conditions")
    assert {k: weights.config[k] for k in fields} == {k: reference.config[k] for k in fields}


@pytest.mark.nodevice
def test_other_files_get_one_line(tmp_path: Path) -> None:
    import torch

    file = tmp_path / "other.safetensors"
    save_file({"blocks.0.attn.qkv.weight": torch.zeros(6, 2)}, str(file))
    assert pixart_file_family(file) is None
    with pytest.raises(WeightsError, match="not a PixArt transformer file") as info:
        load_pixart_transformer(file)
    assert "\n" not in str(info.value)
