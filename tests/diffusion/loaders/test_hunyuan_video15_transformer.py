"""HunyuanVideo 1.5 transformer weights: a diffusers transformer/ folder (one file, sharded),
a folder of Tencent's release and its single file (written here from a tiny diffusers model by
the inverse of diffusers' scripts/convert_hunyuan_video1_5_to_diffusers.py: the blocks' q/k/v
split, as the converter reads them, or fused; the final adaLN's halves in the original (shift,
scale) order) read back under diffusers' names, tensor for tensor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
from hunyuan_video15_tiny import (
    HUNYUAN_VIDEO15_MEANFLOW,
    original_video15_layout,
    tiny_hunyuan_video15_transformer,
)
from safetensors.numpy import save_file
from sd_tiny import state_dict

from diffusion.loaders.errors import WeightsError
from diffusion.loaders.formats.safetensors import SafetensorsFile
from diffusion.loaders.hunyuan_video15.transformer import (
    is_hunyuan_video15_file,
    load_hunyuan_video15_transformer,
)
from diffusion.loaders.hunyuanimage import is_hunyuanimage_file


def _same(weights: Any, expected: dict[str, np.ndarray]) -> None:
    assert set(weights) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)


def _config(model: Any) -> dict[str, Any]:
    """diffusers' config, lists for tuples (as config.json holds them)."""
    return json.loads(json.dumps({k: v for k, v in model.config.items()
                                  if not k.startswith("_")}))


def test_hunyuan_video15_folder(tmp_path: Path) -> None:
    """A diffusers transformer/ folder, in one file and in shards: its config, every tensor as
    stored."""
    reference = tiny_hunyuan_video15_transformer()
    expected = state_dict(reference)
    for name, shard in (("one", "10GB"), ("sharded", "2MB")):
        reference.save_pretrained(tmp_path / name, max_shard_size=shard)
        weights = load_hunyuan_video15_transformer(tmp_path / name)
        _same(weights, expected)
        assert weights.config["image_embed_dim"] == reference.config.image_embed_dim
    assert (tmp_path / "sharded" / "diffusion_pytorch_model.safetensors.index.json").exists()
    with pytest.raises(WeightsError, match="no such file or folder"):
        load_hunyuan_video15_transformer(tmp_path / "missing")


def test_hunyuan_video15_tencent_folder(tmp_path: Path) -> None:
    """A folder of Tencent's release (its q/k/v split, in two shards, Tencent's config.json
    giving the rotary axes and the resolution): diffusers' tensors and config."""
    reference = tiny_hunyuan_video15_transformer(**HUNYUAN_VIDEO15_MEANFLOW,
                                                 target_size=960, task_type="i2v")
    expected = state_dict(reference)
    original = original_video15_layout(expected, fused=False)
    folder = tmp_path / "720p_i2v"
    folder.mkdir()
    keys = sorted(original)
    halves = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[::2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in halves.items():
        save_file({k: original[k] for k in part}, folder / name)
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: name for name, part in halves.items() for k in part}}))
    (folder / "config.json").write_text(json.dumps(
        {"rope_dim_list": [4, 6, 6], "ideal_resolution": "720p", "ideal_task": "i2v"}))
    weights = load_hunyuan_video15_transformer(folder)
    _same(weights, expected)
    assert {k: weights.config[k] for k in _config(reference)} == {
        **_config(reference), "rope_axes_dim": (4, 6, 6)}


@pytest.mark.parametrize("fused, prefix", [(True, ""), (False, "model.diffusion_model.")])
def test_hunyuan_video15_original_file(tmp_path: Path, fused: bool, prefix: str) -> None:
    """One original file (the release's 128-wide heads, whose rotary axes it implies), its
    blocks fused or split, bare or under ComfyUI's prefix: diffusers' tensors, no more, no
    fewer, and diffusers' config from the shapes; HunyuanImage 2.1's test refuses it."""
    reference = tiny_hunyuan_video15_transformer(
        num_attention_heads=1, attention_head_dim=128, rope_axes_dim=(16, 56, 56))
    expected = state_dict(reference)
    path = tmp_path / "hunyuanvideo1.5_480p_t2v.safetensors"
    save_file(original_video15_layout(expected, fused=fused, prefix=prefix), path)
    weights = load_hunyuan_video15_transformer(path)
    _same(weights, expected)
    assert {k: weights.config[k] for k in _config(reference)} == {
        **_config(reference), "rope_axes_dim": (16, 56, 56), "task_type": "t2v"}
    file = SafetensorsFile(path)
    assert is_hunyuan_video15_file(file) and not is_hunyuanimage_file(file)
    other = tmp_path / "other.safetensors"
    save_file({"weight": np.zeros(2, np.float32)}, other)
    with pytest.raises(WeightsError, match=r"not a HunyuanVideo 1\.5 transformer"):
        load_hunyuan_video15_transformer(other)
