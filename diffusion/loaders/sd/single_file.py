"""Single-file original LDM checkpoints (`model.diffusion_model.*`, `first_stage_model.*`,
`cond_stage_model.*` in one .safetensors), converted to diffusers names and configs. SDXL's
`conditioner.embedders.*` files go to `sgm`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import WeightsError
from ..formats.torch_file import open_weights_file
from ..keymaps.expected_keys import clip_text_keys, unet_keys, vae_keys
from ..keymaps.ldm_configs import (
    clip_text_config,
    detect_prediction_type,
    scheduler_config,
    unet_config,
    vae_config,
)
from ..keymaps.ldm_keys import (
    CLIP_PREFIX,
    OPEN_CLIP_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    clip_refs,
    open_clip_refs,
    unet_refs,
    vae_refs,
)
from ..weights import ComponentWeights, ModelInfo, PipelineWeights, TensorFile, require_keys
from .sgm import is_turbo, load_sgm_file, turbo_scheduler_config

__all__ = ["load_single_file"]


def load_single_file(path: Path, *, dtype: np.dtype | None,
                     prediction_type: str | None) -> PipelineWeights:
    """Lazy weights of an SD1/SD2/SDXL LDM checkpoint (see `load_pipeline_weights`)."""
    file = open_weights_file(path)
    if any(key.startswith("conditioner.embedders.") for key in file.keys()):
        return load_sgm_file(file, dtype=dtype, prediction_type=prediction_type)
    _check_layout(file)
    unet = unet_refs(file)
    open_clip = OPEN_CLIP_PREFIX + "token_embedding.weight" in file
    # diffusers' test: SD2 when the UNet cross-attends to 1024-d OpenCLIP embeddings
    wide_context = any(name.endswith("attn2.to_k.weight") and ref.shape[-1] == 1024
                       for name, ref in unet.items())
    family: Literal["sd1", "sd2"] = "sd2" if open_clip or wide_context else "sd1"
    inpainting = file.shape(UNET_PREFIX + "input_blocks.0.0.weight")[1] == 9
    turbo = is_turbo(file)
    prediction = detect_prediction_type(file, family=family, inpainting=inpainting,
                                        explicit=prediction_type, turbo=turbo)
    configs = {"unet": unet_config(unet, file, family=family, prediction_type=prediction)}
    vae = vae_refs(file)
    configs["vae"] = vae_config(vae, file, sample_size=configs["unet"]["sample_size"] * 8)
    text = open_clip_refs(file) if open_clip else clip_refs(file)
    configs["text_encoder"] = clip_text_config(text, file, family=family)
    components = {}
    for name, refs, expected in (("unet", unet, unet_keys), ("vae", vae, vae_keys),
                                 ("text_encoder", text, clip_text_keys)):
        config = configs[name]
        kept = require_keys(name, refs, expected(config), str(file.path))
        components[name] = ComponentWeights(name, config, kept, dtype=dtype)
    return PipelineWeights(
        unet=components["unet"], vae=components["vae"], text_encoder=components["text_encoder"],
        scheduler_config=(turbo_scheduler_config(family, prediction) if turbo
                          else scheduler_config(family, prediction)),
        info=ModelInfo(family=family, inpainting=inpainting, prediction_type=prediction,
                       source="single_file", turbo=turbo))


def _check_layout(file: TensorFile) -> None:
    """WeightsError naming the key when the file is not a whole SD1/SD2 LDM checkpoint."""
    keys = file.keys()
    open_clip = any(key.startswith(OPEN_CLIP_PREFIX) for key in keys)
    needed = {  # component -> accepted keys (old SD1 files lack the "text_model." level)
        "UNet": [UNET_PREFIX + "input_blocks.0.0.weight"],
        "VAE": [VAE_PREFIX + "decoder.conv_in.weight"],
        "text encoder": [OPEN_CLIP_PREFIX + "token_embedding.weight"] if open_clip else
                        [CLIP_PREFIX + f"{level}embeddings.token_embedding.weight"
                         for level in ("text_model.", "")],
    }
    for component, accepted in needed.items():
        if not any(key in file for key in accepted):
            key = accepted[0]
            hint = ""
            if "conv_in.weight" in file or "embeddings.token_embedding.weight" in file:
                hint = (" (this looks like one component of a diffusers folder: pass the "
                        "pipeline folder that holds model_index.json instead)")
            elif "decoder.conv_in.weight" in file:
                hint = (" (this is a VAE file: give it as the VAE, --vae / the WebUI's SD VAE "
                        "setting, diffusion.loaders.sd.vae_file.load_vae, beside a checkpoint)")
            elif any(k.startswith("lora_") or ".lora_" in k for k in file.keys()):
                hint = (" (this is a LoRA: put it in the LoRA folder and name it in the "
                        "prompt, <lora:NAME:1>, with a checkpoint loaded)")
            elif any(k in file for k in ("conv_first.weight", "model.0.weight",
                                         "body.0.weight")):
                hint = (" (this looks like an upscaler, ESRGAN / SwinIR / HAT: put it in the "
                        "upscaler folder, --upscaler-dir, and pick it as the upscaler)")
            elif any(k.removeprefix("model.diffusion_model.").startswith(
                    ("double_blocks.", "joint_blocks.")) for k in file.keys()):
                hint = (" (a FLUX / SD3 file: load it with load_pipeline / --model, its "
                        "missing VAE and text encoders given as text_encoders= / "
                        "--text-encoder files)")
            raise WeightsError(f"{file.path}: not a complete Stable Diffusion checkpoint: "
                               f"{component} tensor {key!r} is missing{hint}")
