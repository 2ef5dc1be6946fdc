"""An LTX-2 diffusers folder whole (model_index.json naming an LTX2Pipeline): its text encoder,
connectors and tokenizer (text.py), transformer (transformer.py), video VAE (vae.py), audio
VAE and vocoder (audio.py), each lazy, and its scheduler's config.

    weights = load_ltx2_folder("LTX-2")
    pipe = LTX2Pipeline.from_weights(weights)   # pipelines.video.ltx2
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..weights import ComponentWeights
from .audio import load_ltx2_audio_vae, load_ltx2_vocoder
from .text import LTX2TextWeights, load_ltx2_text
from .transformer import ltx2_transformer_weights
from .vae import load_ltx2_vae

__all__ = ["LTX2_CLASS", "LTX2Weights", "load_ltx2_folder", "ltx2_family"]

LTX2_CLASS = "LTX2Pipeline"
_COMPONENTS = ("transformer", "vae", "audio_vae", "vocoder", "text_encoder", "connectors",
               "tokenizer", "scheduler")


@dataclass
class LTX2Weights:
    """An LTX-2 folder's parts, each lazy (read as they load), and its scheduler config."""

    text: LTX2TextWeights
    transformer: ComponentWeights
    vae: ComponentWeights
    audio_vae: ComponentWeights
    vocoder: ComponentWeights
    scheduler_config: dict[str, Any]


def ltx2_family(path: str | os.PathLike[str]) -> str | None:
    """"ltx-2" for a diffusers folder whose model_index.json names an LTX2Pipeline, None for
    anything else (its image-to-video and other pipelines' folders too)."""
    return "ltx-2" if pipeline_class(Path(path)) == LTX2_CLASS else None


def load_ltx2_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                     variant: str | None = None) -> LTX2Weights:
    """Lazy weights of the LTX-2 diffusers folder `path`. `dtype`: None (as stored; bfloat16
    read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError naming
    the file or folder when it is not an LTX2Pipeline's or a part is missing."""
    root = Path(path)
    if not (root / "model_index.json").is_file():
        raise WeightsError(f"{root}: no model_index.json; give an LTX-2 diffusers folder "
                           "(Lightricks/LTX-2's layout)")
    pipeline_index(root, LTX2_CLASS, _COMPONENTS)
    scheduler = read_json(root / "scheduler" / "scheduler_config.json")
    if scheduler.get("_class_name", "FlowMatchEulerDiscreteScheduler") \
            != "FlowMatchEulerDiscreteScheduler":
        raise WeightsError(f"{root / 'scheduler' / 'scheduler_config.json'}: a "
                           f"{scheduler['_class_name']}; LTX-2 runs "
                           "FlowMatchEulerDiscreteScheduler")
    return LTX2Weights(
        text=load_ltx2_text(root, dtype=dtype, variant=variant),
        transformer=ltx2_transformer_weights(root, dtype=dtype, variant=variant),
        vae=load_ltx2_vae(root, dtype=dtype, variant=variant),
        audio_vae=load_ltx2_audio_vae(root, dtype=dtype, variant=variant),
        vocoder=load_ltx2_vocoder(root, dtype=dtype, variant=variant),
        scheduler_config=scheduler)
