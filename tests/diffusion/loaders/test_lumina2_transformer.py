"""Lumina 2 transformers read under diffusers' names: a diffusers transformer folder, and one
file in the original layout (Lumina-Image-2.0's, Neta Lumina's; bare or inside a ComfyUI
checkpoint), every tensor equal to diffusers' own and the config from the shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
from diffusers.loaders.single_file_utils import convert_lumina2_to_diffusers
from lumina2_tiny import LUMINA2_TINY, original_layout, tiny_lumina2_transformer
from safetensors.torch import save_file
from sd_tiny import state_dict

from diffusion.loaders import WeightsError
from diffusion.loaders.formats.gguf_file import tensor_file
from diffusion.loaders.lumina2.transformer import (
    is_lumina2_file,
    load_lumina2_transformer,
    lumina2_file_family,
)

pytestmark = pytest.mark.nodevice


def _same(weights: object, expected: dict[str, np.ndarray]) -> None:
    assert sorted(weights) == sorted(expected)  # type: ignore[call-overload]
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value)  # type: ignore[index]


def test_folder(tmp_path: Path) -> None:
    reference = tiny_lumina2_transformer()
    reference.save_pretrained(tmp_path / "transformer")
    weights = load_lumina2_transformer(tmp_path / "transformer")
    assert weights.config["num_kv_heads"] == LUMINA2_TINY["num_kv_heads"]
    _same(weights, state_dict(reference))


def test_original_file(tmp_path: Path) -> None:
    """A ComfyUI-style checkpoint (the transformer under model.diffusion_model., another part
    beside it): diffusers' tensors, the config from the shapes; the names are diffusers'
    own conversion's (its fixed q/k/v widths aside, which the fused rows leave out here)."""
    import torch

    reference = tiny_lumina2_transformer()
    original = original_layout(reference)
    unfused = {k.removeprefix("model.diffusion_model."): v for k, v in original.items()
               if ".qkv." not in k}
    expected = state_dict(reference)
    assert sorted(convert_lumina2_to_diffusers(unfused)) == sorted(
        k for k in expected if ".attn.to_q" not in k and ".attn.to_k" not in k
        and ".attn.to_v" not in k)
    path = tmp_path / "neta-lumina.safetensors"
    save_file({**original, "text_encoders.gemma2_2b.w": torch.zeros(2)}, str(path))
    assert is_lumina2_file(tensor_file(path)) and lumina2_file_family(path) == "lumina2"
    with pytest.raises(WeightsError, match="multiple_of 256"):
        load_lumina2_transformer(path)
    weights = load_lumina2_transformer(path, config={"multiple_of": 16})
    _same(weights, expected)
    config = {k: weights.config[k] for k in LUMINA2_TINY if k not in ("sample_size",
                                                                      "axes_lens")}
    assert config == {k: LUMINA2_TINY[k] for k in config}


def test_not_lumina2(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "other.safetensors"
    save_file({"layers.0.adaLN_modulation.0.weight": torch.zeros(2)}, str(path))
    assert lumina2_file_family(path) is None
    with pytest.raises(WeightsError, match="not a Lumina 2 transformer file"):
        load_lumina2_transformer(path)
