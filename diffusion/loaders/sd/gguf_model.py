"""The layout of a whole-model GGUF (`python -m diffusion quantize`'s default): an SD 1.x/2.x
or SDXL model's UNet, VAE and text encoder(s) in one file, as stable-diffusion.cpp's convert
puts a whole checkpoint in one, but under diffusers' names with the component in front
(`unet.down_blocks.0.resnets.0.conv1.weight`, `vae.decoder.conv_in.weight`,
`text_encoder.encoder.layers.0.mlp.fc1.weight`, SDXL's `text_encoder_2.*`), and with what
loading it alone needs as JSON strings in the metadata:

    diffusion.model            {"family": "sd1", "inpainting": false, "prediction_type":
                               "epsilon", "turbo": false}
    diffusion.config.<part>    the part's diffusers / transformers config.json
    diffusion.scheduler        the scheduler's scheduler_config.json
    diffusion.pipeline         model_index.json's pipeline settings (SDXL's
                               force_zeros_for_empty_prompt, ...)
    diffusion.defaults         the folder's defaults.json where it has one (a UNet-only
                               file carries it too: diffusion.pipelines.model_defaults)

The tokenizers are not stored: every SD model's is CLIP's vocabulary, bundled (SD 2.x and
SDXL's OpenCLIP encoder pad with "!", chosen by the family).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np

from ..errors import WeightsError
from ..formats.gguf_file import GGUFFile
from ..weights import ModelInfo, PipelineWeights, TensorRef

__all__ = ["COMPONENTS", "MODEL_KEY", "component_refs", "model_metadata", "model_tensors",
           "read_model_metadata"]

MODEL_KEY = "diffusion.model"
COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def model_metadata(weights: PipelineWeights) -> dict[str, str]:
    """The metadata strings (module docstring) that describe `weights`."""
    info = {k: v for k, v in asdict(weights.info).items() if k != "source"}
    metadata = {MODEL_KEY: json.dumps(info),
                "diffusion.scheduler": json.dumps(weights.scheduler_config),
                "diffusion.pipeline": json.dumps(weights.pipeline_config)}
    for name in COMPONENTS:
        if (component := getattr(weights, name)) is not None:
            metadata[f"diffusion.config.{name}"] = json.dumps(component.config)
    return metadata


def model_tensors(weights: PipelineWeights) -> Iterator[tuple[str, np.ndarray]]:
    """(file name, values) of every component's tensors, read one at a time."""
    for name in COMPONENTS:
        if (component := getattr(weights, name)) is not None:
            for key in component:
                yield f"{name}.{key}", component[key]


def read_model_metadata(file: GGUFFile) -> dict[str, Any] | None:
    """{"info": ModelInfo, "configs": {part: config}, "scheduler": ..., "pipeline": ...} of a
    whole-model GGUF; None for any other GGUF. WeightsError naming the file when its
    metadata is not the JSON this layout writes."""
    if MODEL_KEY not in file.metadata:
        return None
    try:
        info = ModelInfo(**json.loads(file.metadata[MODEL_KEY]), source="single_file")
        configs = {name: json.loads(file.metadata[f"diffusion.config.{name}"])
                   for name in COMPONENTS if f"diffusion.config.{name}" in file.metadata}
        scheduler = json.loads(file.metadata["diffusion.scheduler"])
        pipeline = json.loads(file.metadata.get("diffusion.pipeline", "{}"))
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{file.path}: a whole-model GGUF whose {MODEL_KEY} metadata is "
                           f"damaged ({type(exc).__name__}: {exc}); quantize the model again"
                           ) from None
    if "unet" not in configs or "vae" not in configs:
        raise WeightsError(f"{file.path}: a whole-model GGUF without its UNet's or VAE's "
                           "config (diffusion.config.unet / .vae); quantize the model again")
    return {"info": info, "configs": configs, "scheduler": scheduler, "pipeline": pipeline}


def component_refs(file: GGUFFile, name: str) -> dict[str, TensorRef]:
    """The tensors of component `name` in a whole-model GGUF, under their diffusers names."""
    prefix = name + "."
    return {key[len(prefix):]: TensorRef(file, key, file.shape(key))
            for key in file.keys() if key.startswith(prefix)}
