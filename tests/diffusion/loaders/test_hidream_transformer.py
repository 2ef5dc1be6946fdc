"""HiDream-I1 transformers read under diffusers' names: a diffusers transformer folder, and
one original file (ComfyUI's; bare or inside a checkpoint), every tensor equal to diffusers'
own and the config from the shapes, which builds a transformer computing as diffusers'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
from hidream_tiny import HIDREAM_TINY, LLAMA_LAYERS, tiny_hidream_transformer
from safetensors.torch import save_file
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.loaders import WeightsError
from diffusion.loaders.component import load_component
from diffusion.loaders.formats.gguf_file import tensor_file
from diffusion.loaders.hidream.transformer import (
    hidream_file_family,
    is_hidream_file,
    load_hidream_transformer,
)
from diffusion.models.hidream import HiDreamImageTransformer2DModel

# what a file's shapes cannot say: the tiny model's own
_UNSAID = {k: HIDREAM_TINY[k] for k in ("attention_head_dim", "axes_dims_rope",
                                        "max_resolution", "llama_layers")}


def _listed(value: object) -> object:
    return list(value) if isinstance(value, (list, tuple)) else value


def _same(weights: object, expected: dict[str, np.ndarray]) -> None:
    assert sorted(weights) == sorted(expected)  # type: ignore[call-overload]
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value)  # type: ignore[index]


@pytest.mark.nodevice
def test_folder(tmp_path: Path) -> None:
    reference = tiny_hidream_transformer()
    reference.save_pretrained(tmp_path / "transformer")
    weights = load_hidream_transformer(tmp_path / "transformer")
    assert weights.config["llama_layers"] == HIDREAM_TINY["llama_layers"]
    _same(weights, state_dict(reference))


@pytest.mark.nodevice
def test_original_file(tmp_path: Path) -> None:
    """A ComfyUI-style checkpoint (the transformer under model.diffusion_model., another part
    beside it): diffusers' tensors; the config from the shapes and the given rest; without
    the rest, HiDream-I1's heads of 128 and its 48 blocks' llama_layers do not fit."""
    import torch

    reference = tiny_hidream_transformer()
    expected = state_dict(reference)
    path = tmp_path / "hidream_i1_dev.safetensors"
    save_file({**{"model.diffusion_model." + k: v for k, v in reference.state_dict().items()},
               "text_encoders.t5xxl.w": torch.zeros(2)}, str(path))
    assert is_hidream_file(tensor_file(path)) and hidream_file_family(path) == "hidream"
    with pytest.raises(WeightsError, match="does not split into heads of 128"):
        load_hidream_transformer(path)
    with pytest.raises(WeightsError, match="llama_layers names 48"):
        load_hidream_transformer(path, config={"attention_head_dim": 8})
    weights = load_hidream_transformer(path, config=_UNSAID)
    _same(weights, expected)
    assert {k: _listed(weights.config[k]) for k in HIDREAM_TINY} == {
        k: _listed(v) for k, v in HIDREAM_TINY.items()}


@pytest.mark.nodevice
def test_not_hidream(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "other.safetensors"
    save_file({"double_stream_blocks.0.block.attn1.to_q.weight": torch.zeros(2)}, str(path))
    assert hidream_file_family(path) is None
    with pytest.raises(WeightsError, match="not a HiDream-I1 transformer file"):
        load_hidream_transformer(path)


def test_file_computes_as_diffusers(tmp_path: Path, first_device: gpucore.Device) -> None:
    """A bare original file's config and weights build a transformer that computes as
    diffusers' model."""
    import torch

    reference = tiny_hidream_transformer()
    path = tmp_path / "hidream.safetensors"
    save_file(reference.state_dict(), str(path))
    weights = load_hidream_transformer(path, config=_UNSAID)
    ours = HiDreamImageTransformer2DModel(weights.config, device=first_device)
    load_component(ours, weights)
    rng = np.random.default_rng(5)
    t5, llama = HIDREAM_TINY["caption_channels"]
    inputs = {"hidden_states": rng.standard_normal((1, 4, 4, 4)).astype(np.float32),
              "timesteps": np.array([600.0], np.float32),
              "encoder_hidden_states_t5": rng.standard_normal((1, 3, t5)).astype(np.float32),
              "encoder_hidden_states_llama3": rng.standard_normal(
                  (LLAMA_LAYERS, 1, 4, llama)).astype(np.float32),
              "pooled_embeds": rng.standard_normal((1, 16)).astype(np.float32)}
    with torch.no_grad():
        expected = reference(**{k: torch.from_numpy(v) for k, v in inputs.items()},
                             return_dict=False)[0].numpy()
    assert_close(ours(**inputs).numpy(), expected, tol=3e-5)
