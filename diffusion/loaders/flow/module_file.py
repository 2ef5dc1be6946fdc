"""What a "module" file is: Forge's VAE / Text Encoder files (`forge_additional_modules`),
the parts a model loads in place of its own (`ae.safetensors`, `clip_l.safetensors`,
`t5xxl_fp16.safetensors`, city96's `t5-v1_1-xxl-encoder-Q8_0.gguf`, an SD VAE such as
`vae-ft-mse-840000-ema-pruned.safetensors`, Qwen-Image's `qwen_image_vae.safetensors`,
FLUX.2's `flux2-vae.safetensors`; the LLM text encoders ComfyUI keeps in
models/text_encoders: `qwen_3_4b.safetensors` for Z-Image and FLUX.2 klein, `qwen_2.5_vl_7b.
safetensors` for Qwen-Image, `mistral_3_small_flux2_bf16.safetensors` for FLUX.2 dev, and
llama.cpp GGUFs of them).

    module_roles("ae.safetensors")            # ("vae",)
    module_roles("t5xxl_fp16.safetensors")    # ("t5",)
    module_roles("flux1-dev.safetensors")     # WeightsError: a FLUX transformer, not a module

Only the file's header is read. A file holding a denoising model (a UNet or transformer, with
or without a VAE and text encoders beside it) is a model, not a module.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import WeightsError
from ..formats.safetensors import SafetensorsFile
from ..keymaps.t5_gguf import T5_GGUF_MARK, gguf_kind
from ..vae_kind import vae_kind
from ..weights import TensorFile
from ..z_image.text_encoder_file import is_llm_file
from .file import file_parts, flow_file_family

__all__ = ["LLM_ROLES", "MODULE_SUFFIXES", "module_roles", "vae_latent_channels"]

MODULE_SUFFIXES = (".safetensors", ".gguf")
# a denoising model's keys: an original checkpoint's, or a bare LDM / diffusers UNet's
_MODEL_MARKS = ("model.diffusion_model.", "input_blocks.", "time_embed.", "time_embedding.")
_ROLES = ("clip_l", "clip_g", "t5")
# an LLM text encoder's role: its kind, as diffusion.loaders.z_image.load_llm_file names them
LLM_ROLES = ("qwen3", "qwen2_5_vl", "mistral")


def _llm_role(file: TensorFile) -> str | None:
    """The kind of LLM text encoder `file` holds (LLM_ROLES: Qwen3's attention has q/k norms,
    Qwen2.5-VL's q/k/v biases, Mistral's neither), None when it holds none."""
    if not is_llm_file(file):
        return None
    keys = set(file.keys())
    if any(key.endswith(("self_attn.q_norm.weight", "attn_q_norm.weight")) for key in keys):
        return "qwen3"
    if any(key.endswith(("self_attn.q_proj.bias", "attn_q.bias")) for key in keys):
        return "qwen2_5_vl"
    return "mistral"


def module_roles(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The parts ("vae", "clip_l", "clip_g", "t5") the module file `path` holds, in that
    order, or the one LLM text encoder it holds (an LLM_ROLES kind). WeightsError saying what
    the file is instead: a model (a UNet, a FLUX / SD3 transformer, a whole checkpoint), a
    GGUF of another kind, or nothing a model takes."""
    path = Path(path)
    if path.suffix.lower() not in MODULE_SUFFIXES:
        raise WeightsError(f"{path.name}: module files are .safetensors (a VAE, CLIP, T5 or "
                           "LLM text encoder) or .gguf (a T5 or LLM text encoder)")
    if path.suffix.lower() == ".gguf":
        from ..formats.gguf_file import GGUFFile

        gguf = GGUFFile(path)
        if T5_GGUF_MARK in gguf:
            return ("t5",)
        if (llm := _llm_role(gguf)) is not None:
            return (llm,)
        raise WeightsError(f"{path.name}: {gguf_kind(path)}, not a VAE or text encoder")
    family = flow_file_family(path)
    if family is not None:
        raise WeightsError(f"{path.name}: a {family} transformer, a model rather than a VAE "
                           "or text encoder; choose it as the model (sd_model_checkpoint)")
    file = SafetensorsFile(path)
    if any(key.startswith(_MODEL_MARKS) for key in file.keys()):
        raise WeightsError(f"{path.name}: a UNet / checkpoint, a model rather than a VAE or "
                           "text encoder; choose it as the model (sd_model_checkpoint)")
    found = file_parts(file, _ROLES)
    if not found and any(key.startswith("encoder.down_blocks.") for key in file.keys()):
        found = {"vae": {}}  # a VAE under diffusers' names
    if not found and vae_kind(path) is not None:
        found = {"vae": {}}  # Qwen-Image's causal 3D VAE under Wan's names
    if not found and (llm := _llm_role(file)) is not None:
        return (llm,)
    if not found:
        raise WeightsError(f"{path.name}: no VAE (decoder.conv_in.weight) or text encoder "
                           "(CLIP-L / CLIP-G / T5) found in it")
    return tuple(role for role in ("vae", *_ROLES) if role in found)


def vae_latent_channels(path: str | os.PathLike[str]) -> int | None:
    """The latent channels of the VAE in the .safetensors file `path` (4: SD 1.x / 2.x /
    SDXL's, 16: FLUX's and SD3's), read from its decoder's first convolution; None when the
    file holds no VAE."""
    file = SafetensorsFile(Path(path))
    for key in ("decoder.conv_in.weight", "first_stage_model.decoder.conv_in.weight"):
        if key in file:
            return int(file.shape(key)[1])
    return None
