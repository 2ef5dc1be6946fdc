"""Kandinsky 5's single-file transformers (kandinskylab's original layout: their
`DiffusionTransformer3D` state dict, bare as `kandinsky5lite_t2i.safetensors` ships it, or
under ComfyUI's `model.diffusion_model.`) read under diffusers' names: the original names
spelled out from their model code, every tensor equal to diffusers' own, the config from the
shapes; a video transformer refused in one line; other files not claimed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from kandinsky5_tiny import KANDINSKY5_TINY, tiny_kandinsky5_transformer
from safetensors.torch import save_file
from sd_tiny import state_dict

from diffusion.loaders import WeightsError
from diffusion.loaders.kandinsky5 import kandinsky5_family, load_kandinsky5_file

pytestmark = pytest.mark.nodevice

_LINEAR = ("weight", "bias")
_ATTENTION = [f"{layer}.{p}" for layer in ("to_query", "to_key", "to_value", "out_layer")
              for p in _LINEAR] + ["query_norm.weight", "key_norm.weight"]
# kandinsky/models/nn.py: FeedForward's two layers have no bias; the blocks' LayerNorms no
# affine parameters; the rotary tables and the time frequencies are non-persistent buffers
_FEED_FORWARD = ["feed_forward.in_layer.weight", "feed_forward.out_layer.weight"]


def original_names(text_blocks: int, visual_blocks: int) -> set[str]:
    """The state dict keys of kandinskylab's `DiffusionTransformer3D`
    (github.com/kandinskylab/kandinsky-5, kandinsky/models/dit.py and nn.py), written out from
    its module tree: the layout their .safetensors files hold."""
    names = [f"{module}.{layer}.{p}" for module, layers in (
        ("time_embeddings", ("in_layer", "out_layer")), ("text_embeddings", ("in_layer", "norm")),
        ("pooled_text_embeddings", ("in_layer", "norm")), ("visual_embeddings", ("in_layer",)),
        ("out_layer", ("modulation.out_layer", "out_layer"))) for layer in layers for p in _LINEAR]
    for n in range(text_blocks):
        block = f"text_transformer_blocks.{n}."
        names += [block + f"text_modulation.out_layer.{p}" for p in _LINEAR]
        names += [block + "self_attention." + a for a in _ATTENTION]
        names += [block + f for f in _FEED_FORWARD]
    for n in range(visual_blocks):
        block = f"visual_transformer_blocks.{n}."
        names += [block + f"visual_modulation.out_layer.{p}" for p in _LINEAR]
        names += [block + f"{kind}.{a}" for kind in ("self_attention", "cross_attention")
                  for a in _ATTENTION]
        names += [block + f for f in _FEED_FORWARD]
    return set(names)


def original_file(path: Path, model: torch.nn.Module, prefix: str = "",
                  dtype: torch.dtype = torch.float32) -> Path:
    """`model`'s weights (diffusers' Kandinsky5Transformer3DModel) saved as kandinskylab's file:
    diffusers kept the original attribute names (checked against `original_names`), so each
    tensor goes under its own name, behind `prefix`."""
    tensors = {prefix + k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(("prefix", "dtype"), [("", torch.float32),
                                               ("model.diffusion_model.", torch.bfloat16)])
def test_original_layout_reads_as_diffusers(tmp_path: Path, prefix: str,
                                            dtype: torch.dtype) -> None:
    reference = tiny_kandinsky5_transformer()
    expected = state_dict(reference)
    assert set(expected) == original_names(2, 2)
    file = original_file(tmp_path / "kandinsky5lite_t2i.safetensors", reference, prefix, dtype)
    assert kandinsky5_family(file) == "kandinsky-5"
    weights = load_kandinsky5_file(file)  # no config: every size from the shapes
    assert set(weights) == set(expected)
    for key, value in expected.items():
        stored = torch.from_numpy(value).to(dtype).float().numpy()  # bf16 read as float32
        np.testing.assert_array_equal(weights[key], stored, err_msg=key)
    for name, value in KANDINSKY5_TINY.items():
        if name != "attention_type":  # no shape says; the model's default is "regular"
            assert weights.config[name] == value, name


def test_video_transformer_refused(tmp_path: Path) -> None:
    """A visual_cond transformer (the video models': latents, condition and mask, 2C + 1
    channels a patch) is a Kandinsky 5 file the picture pipeline cannot run: one line."""
    file = original_file(tmp_path / "kandinsky5lite_t2v_sft_5s.safetensors",
                         tiny_kandinsky5_transformer(visual_cond=True))
    assert kandinsky5_family(file) == "kandinsky-5"
    with pytest.raises(WeightsError) as error:
        load_kandinsky5_file(file)
    text = str(error.value)
    assert "video" in text and "kandinsky5lite_t2i" in text and "\n" not in text, text


def test_other_files_are_not_claimed(tmp_path: Path) -> None:
    file = tmp_path / "other.safetensors"
    save_file({"visual_transformer_blocks.0.weight": torch.zeros(2)}, str(file))
    assert kandinsky5_family(file) is None
    with pytest.raises(WeightsError, match="not a Kandinsky 5 transformer file"):
        load_kandinsky5_file(file)
    (tmp_path / "broken.safetensors").write_bytes(b"nonsense")
    assert kandinsky5_family(tmp_path / "broken.safetensors") is None
