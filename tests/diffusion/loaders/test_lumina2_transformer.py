"""Lumina 2 transformers read under diffusers' names: a diffusers transformer folder, and one
file in the original layout (Lumina-Image-2.0's, Neta Lumina's; bare or inside a ComfyUI
checkpoint), every tensor equal to diffusers' own and the config from the shapes, which
builds a transformer computing as diffusers'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
from diffusers.loaders.single_file_utils import convert_lumina2_to_diffusers
from lumina2_tiny import LUMINA2_TINY, original_layout, tiny_lumina2_transformer
from safetensors.torch import save_file
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.loaders import WeightsError
from diffusion.loaders.component import load_component
from diffusion.loaders.formats.gguf_file import tensor_file
from diffusion.loaders.lumina2.transformer import (
    is_lumina2_file,
    load_lumina2_transformer,
    lumina2_file_family,
)
from diffusion.models.lumina2 import Lumina2Transformer2DModel
from gpustd import asarray


def _same(weights: object, expected: dict[str, np.ndarray]) -> None:
    assert sorted(weights) == sorted(expected)  # type: ignore[call-overload]
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value)  # type: ignore[index]


@pytest.mark.nodevice
def test_folder(tmp_path: Path) -> None:
    reference = tiny_lumina2_transformer()
    reference.save_pretrained(tmp_path / "transformer")
    weights = load_lumina2_transformer(tmp_path / "transformer")
    assert weights.config["num_kv_heads"] == LUMINA2_TINY["num_kv_heads"]
    _same(weights, state_dict(reference))


@pytest.mark.nodevice
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


@pytest.mark.nodevice
def test_not_lumina2(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "other.safetensors"
    save_file({"layers.0.adaLN_modulation.0.weight": torch.zeros(2)}, str(path))
    assert lumina2_file_family(path) is None
    with pytest.raises(WeightsError, match="not a Lumina 2 transformer file"):
        load_lumina2_transformer(path)


def test_file_computes_as_diffusers(tmp_path: Path, first_device: gpucore.Device) -> None:
    """A bare original file's config (from the shapes) and weights build a transformer that
    computes as diffusers' model."""
    import torch

    reference = tiny_lumina2_transformer()
    path = tmp_path / "lumina2.safetensors"
    save_file(original_layout(reference, ""), str(path))
    weights = load_lumina2_transformer(path, config={"multiple_of": 16})
    ours = Lumina2Transformer2DModel(weights.config, device=first_device)
    load_component(ours, weights)
    rng = np.random.default_rng(5)
    latents = rng.standard_normal((1, LUMINA2_TINY["in_channels"], 4, 6)).astype(np.float32)
    states = rng.standard_normal((1, 5, LUMINA2_TINY["cap_feat_dim"])).astype(np.float32)
    t = np.array([0.4], np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(latents), torch.from_numpy(t),
                             torch.from_numpy(states), torch.ones(1, 5, dtype=torch.bool),
                             return_dict=False)[0].numpy()
    got = ours(asarray(latents, device=first_device), t, asarray(states, device=first_device))
    assert_close(got.numpy(), expected, tol=5e-5)
