"""HunyuanImage 2.1 transformer weights: a diffusers transformer/ folder and Tencent's original
single file (written here from a tiny diffusers model by the inverse of diffusers'
scripts/convert_hunyuan_image_to_diffusers.py: the blocks' q/k/v and linear1 split, as the
converter reads them, or fused, as Tencent's tensor-parallel conversion takes them; the final
adaLN's halves in the original (shift, scale) order) read back under diffusers' names, tensor
for tensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
from hunyuanimage_tiny import (
    HUNYUANIMAGE_DISTILLED,
    original_layout,
    tiny_hunyuanimage_transformer,
    write_hunyuanimage_transformer,
)
from safetensors.numpy import save_file
from sd_tiny import state_dict

from diffusion.loaders.errors import WeightsError
from diffusion.loaders.hunyuanimage import load_hunyuanimage_transformer


def test_hunyuanimage_folder(tmp_path: Path) -> None:
    """A diffusers transformer/ folder: its config, every tensor as stored."""
    reference = write_hunyuanimage_transformer(tmp_path / "transformer")
    weights = load_hunyuanimage_transformer(tmp_path / "transformer")
    expected = state_dict(reference)
    assert set(weights) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    assert weights.config["text_embed_2_dim"] == reference.config.text_embed_2_dim
    with pytest.raises(WeightsError, match="no such file or folder"):
        load_hunyuanimage_transformer(tmp_path / "missing")


@pytest.mark.parametrize("fused, prefix", [(True, ""), (False, "model.diffusion_model.")])
def test_hunyuanimage_original_file(tmp_path: Path, fused: bool, prefix: str) -> None:
    """The distilled checkpoint's original file, its blocks fused or split, bare or under
    ComfyUI's prefix: diffusers' tensors, no more, no fewer, and diffusers' config from the
    shapes."""
    reference = tiny_hunyuanimage_transformer(**HUNYUANIMAGE_DISTILLED)
    expected = state_dict(reference)
    path = tmp_path / "hunyuanimage2.1-distilled.safetensors"
    save_file(original_layout(expected, fused=fused, prefix=prefix), path)
    weights = load_hunyuanimage_transformer(path)
    assert set(weights) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    config = {k: v for k, v in reference.config.items() if not k.startswith("_")}
    got = {k: weights.config[k] for k in config}
    assert {**got, "patch_size": list(got["patch_size"]),
            "rope_axes_dim": list(got["rope_axes_dim"])} == {
        **config, "patch_size": list(config["patch_size"]),
        "rope_axes_dim": list(config["rope_axes_dim"])}
    other = tmp_path / "other.safetensors"
    save_file({"weight": np.zeros(2, np.float32)}, other)
    with pytest.raises(WeightsError, match=r"not a HunyuanImage 2\.1 transformer file"):
        load_hunyuanimage_transformer(other)
