"""What a "module" file is: Forge's VAE / Text Encoder files (`forge_additional_modules`),
the parts a model loads in place of its own (`ae.safetensors`, `clip_l.safetensors`,
`t5xxl_fp16.safetensors`, city96's `t5-v1_1-xxl-encoder-Q8_0.gguf`, an SD VAE such as
`vae-ft-mse-840000-ema-pruned.safetensors`).

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
from .file import file_parts, flow_file_family

__all__ = ["MODULE_SUFFIXES", "module_roles", "vae_latent_channels"]

MODULE_SUFFIXES = (".safetensors", ".gguf")
# a denoising model's keys: an original checkpoint's, or a bare LDM / diffusers UNet's
_MODEL_MARKS = ("model.diffusion_model.", "input_blocks.", "time_embed.", "time_embedding.")
_ROLES = ("clip_l", "clip_g", "t5")


def module_roles(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The parts ("vae", "clip_l", "clip_g", "t5") the module file `path` holds, in that
    order. WeightsError saying what the file is instead: a model (a UNet, a FLUX / SD3
    transformer, a whole checkpoint), a GGUF of another kind, or nothing a model takes."""
    path = Path(path)
    if path.suffix.lower() not in MODULE_SUFFIXES:
        raise WeightsError(f"{path.name}: module files are .safetensors (a VAE, CLIP or T5) "
                           "or .gguf (a T5 encoder)")
    if path.suffix.lower() == ".gguf":
        from ..formats.gguf_file import GGUFFile

        if T5_GGUF_MARK in GGUFFile(path):
            return ("t5",)
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
