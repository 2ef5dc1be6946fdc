"""Sana transformers read under diffusers' names: a diffusers transformer folder, and one
file in the original (NVIDIA Sana) layout (a .pth checkpoint's state_dict, a .safetensors
inside a ComfyUI checkpoint), every tensor equal to diffusers' own and the config from the
shapes, which builds a transformer computing as diffusers'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
from diffusers.loaders.single_file_utils import convert_sana_transformer_to_diffusers
from safetensors.torch import save_file
from sana_tiny import SANA_SPRINT_TINY, SANA_TINY, original_layout, tiny_sana_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.loaders import WeightsError
from diffusion.loaders.formats.torch_file import open_weights_file
from diffusion.loaders.sana.transformer import (
    _config,
    is_sana_file,
    load_sana_transformer,
    sana_file_family,
)
from diffusion.models.sana import SanaTransformer2DModel
from gpustd import asarray

# the tiny models' heads: 8 wide (Sana's are 32), 2 cross-attention heads (not Sana's width)
TINY_HEADS = {"num_cross_attention_heads": 2, "attention_head_dim": 8}


def _same(weights: object, expected: dict[str, np.ndarray]) -> None:
    assert sorted(weights) == sorted(expected)  # type: ignore[call-overload]
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value)  # type: ignore[index]


def _model_fields(config: dict, reference: object) -> None:
    fields = {**SANA_TINY, **SANA_SPRINT_TINY}.keys() - {"sample_size"}
    got = {k: config[k] for k in fields if k in config}
    want = {k: reference.config[k] for k in fields}  # type: ignore[attr-defined]
    assert got == want


@pytest.mark.nodevice
def test_folder(tmp_path: Path) -> None:
    reference = tiny_sana_transformer(**SANA_SPRINT_TINY)
    reference.save_pretrained(tmp_path / "transformer")
    weights = load_sana_transformer(tmp_path / "transformer")
    assert weights.config["guidance_embeds"] is True
    _same(weights, state_dict(reference))


@pytest.mark.nodevice
def test_original_pth(tmp_path: Path) -> None:
    """NVIDIA's .pth layout ({"state_dict": ...}, pos_embed and y_embedding beside): diffusers'
    tensors under the names diffusers' own single-file conversion gives; the cross-attention
    heads (not in the shapes for widths other than Sana's) from `config`."""
    import torch

    reference = tiny_sana_transformer()
    original = original_layout(reference)
    assert sorted(convert_sana_transformer_to_diffusers(dict(original))) == sorted(
        state_dict(reference))
    path = tmp_path / "Sana_1600M_1024px.pth"
    torch.save({"state_dict": original}, path)
    assert is_sana_file(open_weights_file(path))
    assert sana_file_family(path) == "sana"
    with pytest.raises(WeightsError, match=r"transformer/config\.json"):
        load_sana_transformer(path)
    weights = load_sana_transformer(path, config=TINY_HEADS)
    _same(weights, state_dict(reference))
    _model_fields(weights.config, reference)


def test_sprint_file_computes_as_diffusers(tmp_path: Path, device: gpucore.Device) -> None:
    """Sana Sprint (q/k norms, guidance embedder) as a ComfyUI-style .safetensors (under
    model.diffusion_model., another part beside it): the tensors, the config from the shapes
    and a transformer built from them computing as diffusers'."""
    import torch

    reference = tiny_sana_transformer(**SANA_SPRINT_TINY)
    path = tmp_path / "sana-sprint.safetensors"
    save_file({**original_layout(reference, "model.diffusion_model."),
               "text_encoders.gemma2_2b.w": torch.zeros(2)}, str(path))
    assert sana_file_family(path) == "sana"
    assert sana_file_family(tmp_path / "missing.safetensors") is None
    weights = load_sana_transformer(path, config=TINY_HEADS)
    _same(weights, state_dict(reference))
    _model_fields(weights.config, reference)
    ours = SanaTransformer2DModel(weights.config, device=device)
    ours.load_state_dict(dict(weights))
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((1, 8, 3, 5)).astype(np.float32)
    states = rng.standard_normal((1, 4, 24)).astype(np.float32)
    with torch.no_grad():
        want = reference(torch.from_numpy(latents), torch.from_numpy(states),
                         torch.tensor([0.7]), guidance=torch.tensor([0.45]),
                         return_dict=False)[0].numpy()
    got = ours(asarray(latents, device=device), asarray(states, device=device), [0.7],
               [0.45]).numpy()
    assert_close(got, want, tol=1e-4)


class _Shapes:
    """A tensor file that only knows its tensors' shapes (a full-size model's, never
    allocated)."""

    def __init__(self, tensors: dict) -> None:
        self.path = Path("full.safetensors")
        self._shapes = {k: tuple(v.shape) for k, v in tensors.items()}

    def keys(self) -> list[str]:
        return list(self._shapes)

    def __contains__(self, key: str) -> bool:
        return key in self._shapes

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]


@pytest.mark.nodevice
@pytest.mark.parametrize("config", [
    {}, {"qk_norm": "rms_norm_across_heads", "guidance_embeds": True},
    {"num_attention_heads": 36, "num_cross_attention_heads": 16, "cross_attention_head_dim": 72,
     "cross_attention_dim": 1152, "num_layers": 28}])
def test_full_size_config_from_shapes(config: dict) -> None:
    """Sana 1600M's, Sana Sprint's and Sana 600M's original layouts (shapes only): the config
    from the shapes is diffusers' (the heads from Sana's widths, no config given)."""
    import diffusers
    from accelerate import init_empty_weights

    with init_empty_weights():
        reference = diffusers.SanaTransformer2DModel(**config)
    derived = _config(_Shapes(original_layout(reference)), "", {})  # type: ignore[arg-type]
    _model_fields(derived, reference)


@pytest.mark.nodevice
def test_not_sana(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "other.safetensors"
    save_file({"blocks.0.attn.qkv.weight": torch.zeros(3, 2)}, str(path))
    assert sana_file_family(path) is None
    with pytest.raises(WeightsError, match="not a Sana transformer"):
        load_sana_transformer(path)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "config.json").write_text('{"_class_name": "PixArtTransformer2DModel"}')
    with pytest.raises(WeightsError, match="not a SanaTransformer2DModel"):
        load_sana_transformer(tmp_path / "t")
