"""SD 1.x and SDXL (base, refiner) diffusers folders as the registry reads them before a load
(`families.capabilities_of`, `load_pipeline_weights`: configs and weight headers): the tiny
test models' configs (sd_tiny's, sdxl_tiny's) and, for each component, the tensor names those
configs call for, each one zero, so no model loads from them and no torch is imported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from sd_tiny import CLIP_TINY, UNET_TINY, VAE_TINY
from sdxl_tiny import CLIP_SDXL_TINY, UNET_REFINER_TINY, UNET_SDXL_TINY, VAE_SDXL_TINY

from diffusion.loaders.keymaps.expected_keys import clip_text_keys, unet_keys, vae_keys

# kind -> (pipeline class, {component: config}); the SDXL refiner has no text_encoder
KINDS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "sd1": ("StableDiffusionPipeline",
            {"unet": UNET_TINY, "vae": VAE_TINY, "text_encoder": CLIP_TINY}),
    "sdxl": ("StableDiffusionXLPipeline",
             {"unet": UNET_SDXL_TINY, "vae": VAE_SDXL_TINY, "text_encoder": CLIP_SDXL_TINY,
              "text_encoder_2": CLIP_SDXL_TINY}),
    "sdxl-refiner": ("StableDiffusionXLImg2ImgPipeline",
                     {"unet": UNET_REFINER_TINY, "vae": VAE_SDXL_TINY,
                      "text_encoder_2": CLIP_SDXL_TINY}),
}
_KEYS = {"unet": unet_keys, "vae": vae_keys, "text_encoder": clip_text_keys,
         "text_encoder_2": clip_text_keys}


def write_sd_folder(path: Path, kind: str, **unet: Any) -> Path:
    """A header-only diffusers folder of `kind` (a key of KINDS) at `path`; `unet`: changes
    to its UNet config (in_channels=9: an inpainting model)."""
    pipeline, components = KINDS[kind]
    components = {**components, "unet": {**components["unet"], **unet}}
    for name, config in components.items():
        (path / name).mkdir(parents=True)
        (path / name / "config.json").write_text(json.dumps(config))
        stem = "model" if name.startswith("text_encoder") else "diffusion_pytorch_model"
        save_file({key: np.zeros(1, np.float16) for key in _KEYS[name](config)},
                  str(path / name / f"{stem}.safetensors"))
    (path / "scheduler").mkdir()
    (path / "scheduler" / "scheduler_config.json").write_text("{}")
    (path / "model_index.json").write_text(json.dumps(
        {"_class_name": pipeline, **{name: ["diffusers", "X"] for name in components}}))
    return path
