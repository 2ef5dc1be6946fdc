"""Sana's VAE weights (load_sana_vae) from a diffusers folder and from an original DC-AE file
in EfficientViT's names: the tiny random DC-AE's tensors, every one, under diffusers' names.
The original file is made here from the tiny model; diffusers' own conversion
(`convert_autoencoder_dc_checkpoint_to_diffusers`) must give the model back from it, so that
the file is a faithful original."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from dc_ae_tiny import DC_AE_TINY, tiny_dc_ae
from safetensors.torch import save_file

from diffusion.loaders.errors import WeightsError
from diffusion.loaders.sana import load_sana_vae
from diffusion.loaders.vae_kind import VaeKind, vae_kind

pytestmark = pytest.mark.nodevice
_MARK = "decoder.conv_in.weight"

# diffusers' name (a pattern) -> the original's, inside a block
_INNER = (
    (r"conv1\.(\w+)$", r"main.conv1.conv.\1"), (r"conv2\.weight$", "main.conv2.conv.weight"),
    (r"^norm\.(\w+)$", r"main.conv2.norm.\1"), (r"^conv\.(\w+)$", r"main.conv.conv.\1"),
    (r"attn\.to_qkv_multiscale\.0\.proj_in\.", "context_module.main.aggreg.0.0."),
    (r"attn\.to_qkv_multiscale\.0\.proj_out\.", "context_module.main.aggreg.0.1."),
    (r"attn\.norm_out\.", "context_module.main.proj.norm."),
    (r"attn\.to_out\.weight$", "context_module.main.proj.conv.weight"),
    (r"conv_out\.conv_inverted\.", "local_module.main.inverted_conv.conv."),
    (r"conv_out\.conv_depth\.", "local_module.main.depth_conv.conv."),
    (r"conv_out\.conv_point\.", "local_module.main.point_conv.conv."),
    (r"conv_out\.norm\.", "local_module.main.point_conv.norm."),
)
_OUTER = {"encoder.conv_in.": "encoder.project_in.conv.",
          "encoder.conv_out.": "encoder.project_out.0.conv.",
          "decoder.conv_in.": "decoder.project_in.conv.",
          "decoder.norm_out.": "decoder.project_out.0.",
          "decoder.conv_out.": "decoder.project_out.2.conv."}


def _original_name(name: str) -> str:
    for new, old in _OUTER.items():
        if name.startswith(new):
            return old + name[len(new):]
    part, level, index, rest = re.fullmatch(r"(\w+)\.\w+_blocks\.(\d+)\.(\d+)\.(.+)",
                                            name).groups()  # type: ignore[union-attr]
    for pattern, replacement in _INNER:
        rest = re.sub(pattern, replacement, rest)
    return f"{part}.stages.{level}.op_list.{index}.{rest}"


def _original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict in EfficientViT's names: q, k, v fused into one 1x1 conv, to_out one."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if ".attn.to_k." in name or ".attn.to_v." in name:
            continue
        if ".attn.to_q." in name:
            parent = name[: -len(".to_q.weight")]
            fused = torch.cat([state[f"{parent}.to_{p}.weight"] for p in "qkv"])
            proj = _original_name(f"{parent}.to_out.weight")
            out[proj.replace(".proj.", ".qkv.")] = fused[..., None, None]
        elif ".attn.to_out." in name:
            out[_original_name(name)] = tensor[..., None, None]
        else:
            out[_original_name(name)] = tensor
    return out


def _reference() -> tuple[Any, dict[str, np.ndarray]]:
    model = tiny_dc_ae()
    return model, {k: v.numpy() for k, v in model.state_dict().items()}


def _same(weights: Any, expected: dict[str, np.ndarray]) -> None:
    assert sorted(weights) == sorted(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(weights[name], array, err_msg=name)


def test_folder(tmp_path: Path) -> None:
    model, expected = _reference()
    model.save_pretrained(tmp_path / "vae")
    for path in (tmp_path, tmp_path / "vae"):
        weights = load_sana_vae(path)
        _same(weights, expected)
        assert weights.config["scaling_factor"] == DC_AE_TINY["scaling_factor"]
    assert load_sana_vae(tmp_path, dtype="float16")[_MARK].dtype == np.float16
    assert vae_kind(tmp_path / "vae" / "diffusion_pytorch_model.safetensors") == VaeKind(
        "dc-ae", 8)


def test_original_file(tmp_path: Path) -> None:
    from diffusers.loaders.single_file_utils import convert_autoencoder_dc_checkpoint_to_diffusers

    model, expected = _reference()
    original = _original(model.state_dict())
    converted = convert_autoencoder_dc_checkpoint_to_diffusers(dict(original))
    assert sorted(converted) == sorted(expected)  # the made-up file is a faithful original
    for name, tensor in converted.items():
        np.testing.assert_array_equal(tensor.numpy(), expected[name], err_msg=name)
    save_file({k: v.contiguous() for k, v in original.items()}, tmp_path / "dc-ae.safetensors")
    weights = load_sana_vae(tmp_path / "dc-ae.safetensors", config=dict(model.config))
    _same(weights, expected)
    assert load_sana_vae(tmp_path / "dc-ae.safetensors").config["latent_channels"] == 32
    assert vae_kind(tmp_path / "dc-ae.safetensors") == VaeKind("dc-ae", 8)
    assert VaeKind("dc-ae", 32).describe() == "a DC-AE of 32 latent channels (Sana's)"


def test_not_a_dc_ae_named_in_one_line(tmp_path: Path) -> None:
    save_file({"decoder.conv1.weight": torch.zeros(2, 2)}, tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match="holds no DC-AE"):
        load_sana_vae(tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match="no such folder"):
        load_sana_vae(tmp_path / "missing")

