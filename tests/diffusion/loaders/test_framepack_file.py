"""A FramePack transformer as one .safetensors file (lllyasviel's state dict, as ComfyUI's
FramePackWrapper ships FramePackI2V_HY_bf16.safetensors: diffusers' parameter names), bare
or under ComfyUI's `model.diffusion_model.`: the config read from its shapes is the one
diffusers saved and every tensor is diffusers'; a file of another model, and (through the
folder's transformer loader) one whose heads are not the release's 128 wide with no rotary
axes given, are refused in one line naming it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
from hunyuan_video_framepack_tiny import FRAMEPACK_TINY, tiny_framepack_transformer
from safetensors.numpy import save_file
from sd_tiny import state_dict

from diffusion.loaders.errors import WeightsError
from diffusion.loaders.hunyuan_video.framepack import load_framepack_transformer
from diffusion.loaders.hunyuan_video.framepack_file import load_framepack_file

ROPE = {"rope_axes_dim": FRAMEPACK_TINY["rope_axes_dim"]}  # the tiny heads are 16 wide


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_single_file(tmp_path: Path, prefix: str) -> None:
    model = tiny_framepack_transformer(seed=5)
    model.save_pretrained(tmp_path / "transformer")
    state = state_dict(model)
    save_file({prefix + k: v for k, v in state.items()}, tmp_path / "fp.safetensors")
    weights = load_framepack_file(tmp_path / "fp.safetensors", config=ROPE)
    saved = json.loads((tmp_path / "transformer" / "config.json").read_text())
    for key, value in saved.items():
        if not key.startswith("_"):
            got = weights.config[key]
            assert (list(got) if isinstance(got, tuple) else got) == value, key
    assert sorted(weights.keys()) == sorted(state)
    for key in state:
        np.testing.assert_array_equal(weights[key], state[key])


def test_refused(tmp_path: Path) -> None:
    save_file({"x_embedder.proj.weight": np.zeros((4, 4, 1, 2, 2), np.float32)},
              tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match=r"other\.safetensors: no clean_x_embedder\.proj_2x"
                                           r"\.weight and image_projection\.up\.weight tensors: "
                                           "not a FramePack transformer"):
        load_framepack_file(tmp_path / "other.safetensors")
    model = tiny_framepack_transformer(seed=5)
    save_file(state_dict(model), tmp_path / "fp.safetensors")
    with pytest.raises(WeightsError, match="heads 16 wide, not the release's 128"):
        load_framepack_transformer(tmp_path / "fp.safetensors")
