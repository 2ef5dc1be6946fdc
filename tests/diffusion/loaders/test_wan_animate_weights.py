"""Wan 2.2 Animate's transformer weights: a diffusers transformer/ folder read back into ours,
and the original release's names (Wan2.2-Animate-14B) read as diffusers' converter reads
them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from support import assert_close
from wan_animate_tiny import (
    ANIMATE_TINY,
    TEXT_TOKENS,
    animate_original_names,
    tiny_animate_transformer_folder,
)

import gpucore
from diffusion.loaders.component import load_component
from diffusion.loaders.errors import WeightsError
from diffusion.loaders.wan import load_wan_file, wan_file_family
from diffusion.loaders.wan.animate import load_wan_animate_transformer
from diffusion.models.wan_animate import WanAnimateTransformer3DModel
from gpustd import asarray

# ANIMATE_TINY with the release's 512 x 512 face crops (seven res blocks, as diffusers'
# converter expects), 2 channels wide at every size: built for its names, never run
RELEASE_TINY: dict[str, Any] = {
    **ANIMATE_TINY, "motion_encoder_size": 512,
    "motion_encoder_channel_sizes": {str(2 ** i): 2 for i in range(9, 1, -1)}}
@pytest.mark.nodevice
def test_original_names_read_as_diffusers_converts_them(tmp_path: Path) -> None:
    """The release's names (written from a tiny model) go back to the model's own state
    through diffusers' convert_wan_transformer_to_diffusers and through ours alike, and
    ours reads the config from the shapes and the release's config.json."""
    import diffusers
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = diffusers.WanAnimateTransformer3DModel(**RELEASE_TINY)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    original = animate_original_names(state, 7)
    converted = convert_wan_transformer_to_diffusers(dict(original))
    converted = {k: v for k, v in converted.items() if not k.endswith(".kernel")}
    assert sorted(converted) == sorted(state)
    assert all(torch.equal(converted[k], state[k]) for k in state)
    folder = tmp_path / "Wan2.2-Animate-14B"
    folder.mkdir()
    save_file(original, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps(
        {"_class_name": "WanModel", "model_type": "animate", "dim": 24, "num_heads": 2}))
    weights = load_wan_animate_transformer(folder)
    assert sorted(weights) == sorted(state)
    for key in state:
        np.testing.assert_array_equal(weights[key], state[key].numpy(), err_msg=key)
    for field in ("num_attention_heads", "attention_head_dim", "in_channels",
                  "latent_channels", "out_channels", "num_layers", "image_dim",
                  "added_kv_proj_dim", "motion_encoder_size", "motion_encoder_channel_sizes",
                  "motion_style_dim", "motion_dim", "motion_encoder_dim",
                  "face_encoder_hidden_dim", "face_encoder_num_heads",
                  "inject_face_latents_blocks", "text_dim", "ffn_dim", "freq_dim"):
        assert weights.config.get(field, ...) == model.config[field] or (
            field == "in_channels" and "in_channels" not in weights.config), field
    # one file, no config.json: Wan's 128-wide heads, which this 24-wide model has not
    save_file({f"model.diffusion_model.{k}": v for k, v in original.items()},
              str(tmp_path / "animate.safetensors"))
    with pytest.raises(WeightsError, match="not a multiple of Wan's 128-wide heads"):
        load_wan_animate_transformer(tmp_path / "animate.safetensors")
    # ... a --base folder's config gives them; the file is told apart from plain Wan's
    based = load_wan_animate_transformer(tmp_path / "animate.safetensors",
                                         config={"num_attention_heads": 2})
    assert based.config == weights.config
    assert wan_file_family(tmp_path / "animate.safetensors") == "wan-animate"
    with pytest.raises(WeightsError, match="Animate transformer file: read it with"):
        load_wan_file(tmp_path / "animate.safetensors")
    save_file({"patch_embedding.weight": state["patch_embedding.weight"]},
              str(tmp_path / "other.safetensors"))
    with pytest.raises(WeightsError, match="not a Wan Animate transformer"):
        load_wan_animate_transformer(tmp_path / "other.safetensors")


def test_animate_folder_reads_back(first_device: gpucore.Device, tmp_path: Path) -> None:
    """diffusers' save_pretrained folder (config.json with its extra fields, safetensors)
    loads into ours through load_component and gives diffusers' flow."""
    reference = tiny_animate_transformer_folder(tmp_path / "transformer", seed=32)
    weights = load_wan_animate_transformer(tmp_path / "transformer")
    assert weights.config["_class_name"] == "WanAnimateTransformer3DModel"
    ours = load_component(WanAnimateTransformer3DModel(weights.config, device=first_device),
                          weights)
    rng = np.random.default_rng(5)
    latent, size = ANIMATE_TINY["latent_channels"], ANIMATE_TINY["motion_encoder_size"]
    x = {"latents": rng.standard_normal((1, 2 * latent + 4, 3, 2, 4)),
         "text": rng.standard_normal((1, TEXT_TOKENS, ANIMATE_TINY["text_dim"])),
         "image": rng.standard_normal((1, 3, ANIMATE_TINY["image_dim"])),
         "pose": rng.standard_normal((1, latent, 2, 2, 4)),
         "face": rng.uniform(-1, 1, (1, 3, 5, size, size))}
    x = {k: v.astype(np.float32) for k, v in x.items()}
    timestep = np.array([800.0], np.float32)
    with torch.no_grad():
        t = {k: torch.from_numpy(v) for k, v in x.items()}
        expected = reference(t["latents"], torch.from_numpy(timestep), t["text"], t["image"],
                             t["pose"], t["face"]).sample.numpy()
    on = {k: asarray(v, device=first_device) for k, v in x.items()}
    got = ours(on["latents"], timestep, on["text"], encoder_hidden_states_image=on["image"],
               pose_hidden_states=on["pose"], face_pixel_values=on["face"]).numpy()
    assert_close(got, expected, tol=5e-6)
