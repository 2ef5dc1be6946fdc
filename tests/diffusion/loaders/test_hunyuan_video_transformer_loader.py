"""HunyuanVideo (1.0) transformer weights: a diffusers transformer/ folder and Tencent's
original single file (written here from a tiny diffusers model by the inverse of diffusers'
scripts/convert_hunyuan_video_to_diffusers.py: the blocks' q/k/v and linear1 fused, as the
release stores them, or split; the final adaLN's halves in the original (shift, scale)
order) read back under diffusers' names, tensor for tensor: the release's .pt (its tensors
under `module`) and a .safetensors file, bare or under ComfyUI's prefix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from hunyuan_video_tiny import (
    HUNYUAN_VIDEO_TINY,
    original_video_layout,
    tiny_hunyuan_video_transformer,
    write_hunyuan_video_transformer,
)
from safetensors.numpy import save_file
from sd_tiny import state_dict

from diffusion.loaders.errors import WeightsError
from diffusion.loaders.hunyuan_video import load_hunyuan_video_transformer

ROPE = {"rope_axes_dim": HUNYUAN_VIDEO_TINY["rope_axes_dim"]}  # the tiny heads are 16 wide


def _same(weights: dict, expected: dict[str, np.ndarray]) -> None:
    assert set(weights) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)


def test_hunyuan_video_folder(tmp_path: Path) -> None:
    """A diffusers transformer/ folder: its config, every tensor as stored."""
    reference = write_hunyuan_video_transformer(tmp_path / "transformer")
    weights = load_hunyuan_video_transformer(tmp_path / "transformer")
    _same(weights, state_dict(reference))
    assert weights.config["pooled_projection_dim"] == reference.config.pooled_projection_dim
    with pytest.raises(WeightsError, match="no such file or folder"):
        load_hunyuan_video_transformer(tmp_path / "missing")
    with pytest.raises(WeightsError, match="is not a HunyuanVideoTransformer3DModel"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "config.json").write_text('{"_class_name": "FluxTransformer"}')
        load_hunyuan_video_transformer(tmp_path / "other")


@pytest.mark.parametrize("form", ["pt", "safetensors-split", "comfyui"])
def test_hunyuan_video_original_file(tmp_path: Path, form: str) -> None:
    """The original file: diffusers' tensors, no more, no fewer, and diffusers' config from
    the shapes (the guidance embedding's presence included)."""
    guidance = form != "comfyui"
    reference = tiny_hunyuan_video_transformer(guidance_embeds=guidance)
    expected = state_dict(reference)
    original = original_video_layout(expected, fused=form != "safetensors-split",
                                     prefix="model.diffusion_model." if form == "comfyui" else "")
    if form == "pt":
        path = tmp_path / "mp_rank_00_model_states.pt"
        torch.save({"module": {k: torch.from_numpy(v) for k, v in original.items()}}, path)
    else:
        path = tmp_path / "hunyuan_video_t2v_720p_bf16.safetensors"
        save_file(original, path)
    weights = load_hunyuan_video_transformer(path, config=ROPE)
    _same(weights, expected)
    config = {k: v for k, v in reference.config.items() if not k.startswith("_")}
    got = {k: weights.config[k] for k in config}
    assert {**got, "rope_axes_dim": list(got["rope_axes_dim"])} == {
        **config, "rope_axes_dim": list(config["rope_axes_dim"])}
    with pytest.raises(WeightsError, match="pass config="):
        load_hunyuan_video_transformer(path)  # heads not the release's 128: axes unknown


def test_hunyuan_video_not_a_transformer_file(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"x": np.zeros(2, np.float32)}, path)
    with pytest.raises(WeightsError, match="not a HunyuanVideo transformer"):
        load_hunyuan_video_transformer(path)
