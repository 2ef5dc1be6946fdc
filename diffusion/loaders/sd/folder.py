"""Diffusers pipeline folders: model_index.json, unet/, vae/, text_encoder/, tokenizer/,
scheduler/ (SDXL: also text_encoder_2/, tokenizer_2/; the refiner has only those), each model as
config.json plus safetensors weights (optionally a `.fp16` variant, optionally sharded with a
`.safetensors.index.json`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..keymaps.expected_keys import clip_text_keys, unet_keys, vae_keys
from ..weights import ComponentWeights, ModelInfo, PipelineWeights, require_keys

__all__ = ["load_folder"]

# component -> (weights file stem, expected-keys function, required); unet/vae are diffusers
# models, the text encoders transformers models. An SDXL refiner has only text_encoder_2.
_COMPONENTS = {
    "unet": ("diffusion_pytorch_model", unet_keys),
    "vae": ("diffusion_pytorch_model", vae_keys),
    "text_encoder": ("model", clip_text_keys),
    "text_encoder_2": ("model", clip_text_keys),
}
_WITH_PROJECTION = "CLIPTextModelWithProjection"


def _declared(index: dict[str, Any], name: str) -> bool:
    entry = index.get(name)
    return isinstance(entry, list) and bool(entry) and entry[0] is not None


def load_folder(root: Path, *, dtype: np.dtype | None, prediction_type: str | None,
                variant: str | None) -> PipelineWeights:
    """Lazy weights of the diffusers pipeline folder `root` (see `load_pipeline_weights`)."""
    index_path = root / "model_index.json"
    if not index_path.is_file():
        raise WeightsError(f"{root}: not a diffusers pipeline folder: model_index.json is missing")
    index = read_json(index_path)
    wanted = [name for name in _COMPONENTS if _declared(index, name)]
    for name in ("unet", "vae"):
        if name not in wanted:
            raise WeightsError(f"{index_path}: the pipeline has no {name!r} component")
    if "text_encoder" not in wanted and "text_encoder_2" not in wanted:
        raise WeightsError(f"{index_path}: the pipeline has no 'text_encoder' component")
    components = {name: _component(root, name, index[name], variant, dtype) for name in wanted}
    scheduler = read_json(root / "scheduler" / "scheduler_config.json")
    if prediction_type is not None:
        scheduler = {**scheduler, "prediction_type": prediction_type}
    unet_config = components["unet"].config
    text = components.get("text_encoder")
    if unet_config.get("addition_embed_type") == "text_time":
        family = "sdxl" if text is not None else "sdxl-refiner"
        if "text_encoder_2" not in components:
            raise WeightsError(f"{index_path}: an SDXL UNet (addition_embed_type text_time) "
                               "needs the 'text_encoder_2' component, which the folder lacks")
    elif (unet_config.get("cross_attention_dim") == 1024
          or (text is not None and text.config.get("hidden_act") == "gelu")):
        family = "sd2"  # OpenCLIP (gelu) text encoder
    else:
        family = "sd1"
    info = ModelInfo(family=family,  # type: ignore[arg-type]
                     inpainting=unet_config.get("in_channels") == 9,
                     prediction_type=scheduler.get("prediction_type", "epsilon"),
                     source="diffusers",
                     turbo=_named_turbo(root))
    tokenizers = [root / name if (root / name).is_dir() else None
                  for name in ("tokenizer", "tokenizer_2")]
    settings = {key: value for key, value in index.items()
                if not key.startswith("_") and not isinstance(value, list)}
    return PipelineWeights(unet=components["unet"], vae=components["vae"], text_encoder=text,
                           scheduler_config=scheduler, info=info, tokenizer_dir=tokenizers[0],
                           text_encoder_2=components.get("text_encoder_2"),
                           tokenizer_2_dir=tokenizers[1], pipeline_config=settings)


def _named_turbo(root: Path) -> bool:
    """Turbo models are SD 2.1 / SDXL in weights and configs; only their name says it (the
    folder, or for a Hugging Face cache snapshot the repository's, models--stabilityai--sdxl-turbo).
    Trailing timestep spacing is no sign: zero-SNR models use it too."""
    names = [root.name, root.parent.parent.name if root.parent.name == "snapshots" else ""]
    return any("turbo" in name.lower() for name in names)


def _component(root: Path, name: str, entry: list[Any], variant: str | None,
               dtype: np.dtype | None) -> ComponentWeights:
    """One component folder's lazy weights, checked against the keys its config implies."""
    stem, expected_keys = _COMPONENTS[name]
    config_path = root / name / "config.json"
    config = read_json(config_path)
    if entry[-1] == _WITH_PROJECTION and _WITH_PROJECTION not in (config.get("architectures")
                                                                 or ()):
        config = {**config, "architectures": [_WITH_PROJECTION]}  # model_index says so
    refs, where = weight_refs(root / name, stem, variant)
    if name.startswith("text_encoder"):
        # transformers < 5.6 saved CLIPTextModel weights under "text_model."; newer, without
        refs = {key.removeprefix("text_model."): ref for key, ref in refs.items()}
    try:
        keys = expected_keys(config)
    except WeightsError as error:
        raise WeightsError(f"{config_path}: {error}") from None
    except (KeyError, TypeError, ValueError) as error:
        raise WeightsError(f"{config_path}: bad or missing field {error}") from None
    return ComponentWeights(name, config, require_keys(name, refs, keys, where), dtype=dtype)
