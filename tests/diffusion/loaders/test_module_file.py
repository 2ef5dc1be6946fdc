"""diffusion.loaders.flow.module_file: which Forge module files (VAE / text encoder) a file is, read
from its header, and what it is instead (a model, another GGUF, nothing a model takes)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="the tiny files are built with diffusers/transformers")
import torch
from safetensors.torch import save_file

from diffusion.loaders import WeightsError
from diffusion.loaders.flow.module_file import module_roles, vae_latent_channels

pytestmark = pytest.mark.nodevice


def _save(path: Path, state: dict[str, Any]) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import diffusers
    from flow_tiny import bfl_checkpoint, tiny_t5
    from ldm_files import ldm_clip, ldm_vae
    from sd_tiny import randomized, tiny_text_encoder, tiny_vae
    from t5_files import write_t5_gguf, write_t5_scaled_fp8

    from diffusion.loaders.formats.gguf_write import write_gguf

    root = tmp_path_factory.mktemp("module-files")
    vae_model, clip = tiny_vae(), tiny_text_encoder()
    vae = ldm_vae(vae_model.state_dict())
    _save(root / "vae-ft-mse.safetensors", {k.removeprefix("first_stage_model."): v
                                            for k, v in vae.items()})
    _save(root / "extracted-vae.safetensors", vae)  # Forge's "format 0": under the prefix
    vae_model.save_pretrained(root / "diffusers-vae", safe_serialization=True)
    # a whole checkpoint: its VAE and CLIP beside a UNet (one of its tensors is enough)
    _save(root / "sd15.safetensors", {**vae, **ldm_clip(clip.state_dict()),
                                      "model.diffusion_model.input_blocks.0.0.weight":
                                      torch.zeros(32, 4, 3, 3)})
    _save(root / "clip_l.safetensors", {"text_model." + k.removeprefix("text_model."): v
                                        for k, v in clip.state_dict().items()})
    t5 = tiny_t5()
    _save(root / "t5xxl_fp16.safetensors", {k: v for k, v in t5.state_dict().items()
                                            if k != "encoder.embed_tokens.weight"})
    write_t5_scaled_fp8(t5, root / "t5xxl_fp8_e4m3fn_scaled.safetensors")
    write_t5_gguf(t5, root / "t5-v1_1-xxl-encoder-Q8_0.gguf", "q8_0")
    flux = randomized(diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        axes_dims_rope=(2, 2, 4)), 7)
    bfl = bfl_checkpoint(flux, "", bf16=False)
    write_gguf(root / "flux1-dev-Q8_0.gguf", ((k, v.numpy()) for k, v in bfl.items()), "q8_0",
               architecture="flux")
    _save(root / "lora.safetensors", {"lora_unet_down.lora_up.weight": torch.zeros(4, 2)})
    (root / "vae.ckpt").write_bytes(b"")
    return root


@pytest.mark.parametrize(("name", "roles"), [
    ("vae-ft-mse.safetensors", ("vae",)),
    ("extracted-vae.safetensors", ("vae",)),
    ("diffusers-vae/diffusion_pytorch_model.safetensors", ("vae",)),
    ("clip_l.safetensors", ("clip_l",)),
    ("t5xxl_fp16.safetensors", ("t5",)),
    ("t5xxl_fp8_e4m3fn_scaled.safetensors", ("t5",)),
    ("t5-v1_1-xxl-encoder-Q8_0.gguf", ("t5",)),
])
def test_module_files_say_what_they_hold(files: Path, name: str, roles: tuple[str, ...]) -> None:
    assert module_roles(files / name) == roles


@pytest.mark.parametrize(("name", "says"), [
    ("sd15.safetensors", "a UNet / checkpoint, a model rather than a VAE"),
    ("flux1-dev-Q8_0.gguf", "FLUX transformer"),
    ("lora.safetensors", "no VAE (decoder.conv_in.weight) or text encoder"),
    ("vae.ckpt", "module files are .safetensors"),
])
def test_other_files_are_no_modules(files: Path, name: str, says: str) -> None:
    with pytest.raises(WeightsError, match=f"{re.escape(name)}: .*{re.escape(says)}"):
        module_roles(files / name)


def test_a_vae_file_gives_its_latent_channels(files: Path) -> None:
    assert vae_latent_channels(files / "vae-ft-mse.safetensors") == 4
    assert vae_latent_channels(files / "extracted-vae.safetensors") == 4
    assert vae_latent_channels(files / "t5xxl_fp16.safetensors") is None


@pytest.mark.parametrize(("kind", "norm", "bias"), [
    ("qwen3", True, False), ("qwen2_5_vl", False, True), ("mistral", False, False)])
def test_llm_text_encoders_say_their_kind(tmp_path: Path, kind: str, norm: bool,
                                          bias: bool) -> None:
    """ComfyUI's LLM text encoder files (Qwen3: q/k norms; Qwen2.5-VL's language model beside
    its vision tower: q/k/v biases; Mistral: neither) and llama.cpp GGUFs of them are modules
    of their kind; a model's key beside them still makes a model."""
    from diffusion.loaders.formats.gguf_write import write_gguf

    layer = {"self_attn.q_proj.weight": torch.zeros(8, 8), "mlp.up_proj.weight": torch.zeros(8, 8)}
    gguf = {"attn_q.weight": np.zeros((8, 32), np.float32)}
    if norm:
        layer["self_attn.q_norm.weight"] = torch.ones(4)
        gguf["attn_q_norm.weight"] = np.ones(32, np.float32)
    if bias:
        layer["self_attn.q_proj.bias"] = torch.zeros(8)
        gguf["attn_q.bias"] = np.zeros(32, np.float32)
    state = {f"model.layers.0.{k}": v for k, v in layer.items()}
    state["model.embed_tokens.weight"] = torch.zeros(16, 8)
    state["visual.blocks.0.attn.qkv.weight"] = torch.zeros(6, 2)
    assert module_roles(_save(tmp_path / "encoder.safetensors", state)) == (kind,)
    path = tmp_path / "encoder-F16.gguf"
    write_gguf(path, [("token_embd.weight", np.zeros((16, 32), np.float32)),
                      *((f"blk.0.{k}", v) for k, v in gguf.items())], "f16",
               architecture="llama")
    assert module_roles(path) == (kind,)
    state["model.diffusion_model.x.weight"] = torch.zeros(2)
    with pytest.raises(WeightsError, match="a model rather than"):
        module_roles(_save(tmp_path / "model.safetensors", state))


def test_a_causal_3d_vae_is_a_module(tmp_path: Path) -> None:
    """Qwen-Image's VAE as ComfyUI ships it (Wan 2.1's names, 5-D kernels) is a VAE module;
    its latent channels are no 2D VAE's."""
    path = _save(tmp_path / "qwen_image_vae.safetensors", {
        "encoder.conv1.weight": torch.zeros(8, 3, 3, 3, 3),
        "decoder.conv1.weight": torch.zeros(8, 16, 3, 3, 3),
        "decoder.head.2.weight": torch.zeros(3, 8, 3, 3, 3)})
    assert module_roles(path) == ("vae",)
    assert vae_latent_channels(path) is None
