"""Diffusers folders of HunyuanImage 2.1's refiner (`HunyuanImageRefinerPipeline`, e.g.
hunyuanvideo-community/HunyuanImage-2.1-Refiner-Diffusers): transformer/ (a
HunyuanImageTransformer2DModel of 3D patches over the picture's and the condition's latents,
guidance-distilled), vae/ (AutoencoderKLHunyuanImageRefiner: 16x, 32 channels), text_encoder/
(Qwen2.5-VL, whose language model alone is read), tokenizer/ (Qwen's), scheduler/
(FlowMatchEulerDiscreteScheduler). No ByT5 glyph encoder, no guider.

    weights = load_hunyuanimage_refiner_folder("HunyuanImage-2.1-Refiner-Diffusers")
    weights.transformer.config["in_channels"]  # 128: 64 noisy + 64 condition channels
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..qwen_image.folder import language_model_config, language_model_refs, qwen_tokenizer
from ..weights import TensorRef

__all__ = ["REFINER_FAMILY", "hunyuanimage_refiner_family", "load_hunyuanimage_refiner_folder"]

_CLASS = "HunyuanImageRefinerPipeline"
REFINER_FAMILY = "hunyuanimage-2.1-refiner"


def hunyuanimage_refiner_family(path: str | os.PathLike[str]) -> str | None:
    """REFINER_FAMILY for a diffusers folder whose model_index.json names a
    HunyuanImageRefinerPipeline, None for anything else (the base's folder names a
    HunyuanImagePipeline; a broken JSON file is left for loading to name)."""
    root = Path(path)
    return REFINER_FAMILY if root.is_dir() and pipeline_class(root) == _CLASS else None


def load_hunyuanimage_refiner_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                                     variant: str | None = None) -> DiTWeights:
    """Lazy weights of the HunyuanImage 2.1 refiner folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError
    naming the file or folder when it is not a HunyuanImageRefinerPipeline or a part is
    missing. diffusers: `HunyuanImageRefinerPipeline.from_pretrained(path)`."""
    root = Path(path)
    pipeline_index(root, _CLASS, DIT_COMPONENTS)

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        if name != "text_encoder":
            return config, refs
        return language_model_config(config), language_model_refs(refs)

    parts = dit_weights(root, dtype=dtype, variant=variant, skip=(), adapt=adapt)
    return DiTWeights(scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
                      tokenizer_dir=qwen_tokenizer(root / "tokenizer"),
                      **parts)  # type: ignore[arg-type]


