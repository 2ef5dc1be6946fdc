"""Diffusers folders of JoyImage Edit (`JoyImageEditPipeline`): transformer/
(JoyImageEditTransformer3DModel), text_encoder/ (transformers' Qwen3VLForConditionalGeneration:
its language model, and apart its vision tower, the reader of the picture to edit; `lm_head`
left out), tokenizer/ (Qwen's; processor/ where tokenizer/ is absent), processor/
preprocessor_config.json (the picture preparation's sizes; Qwen3-VL's where absent), vae/
(Wan 2.1's AutoencoderKLWan, read a frame at a time) and scheduler/
(FlowMatchEulerDiscreteScheduler with a constant shift).

    weights = load_joyimage_folder("JoyAI-Image-Edit-Diffusers")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DiTWeights, dit_weights
from ..qwen_image.folder import language_model_refs, qwen_tokenizer, vision_refs
from ..qwen_image.folder21 import qwen3_vl_text_config
from ..weights import ComponentWeights, TensorRef, resolve_dtype

__all__ = ["JoyImageWeights", "joyimage_family", "load_joyimage_folder"]

_CLASSES = {"JoyImageEditPipeline": "joyimage-edit",
            "JoyImageEditPlusPipeline": "joyimage-edit-plus"}
_COMPONENTS = ("transformer", "vae", "text_encoder", "scheduler")


@dataclass
class JoyImageWeights(DiTWeights):
    """A JoyImage Edit folder's lazy component weights, its scheduler config, the folder of
    its tokenizer, the text encoder's vision tower (None where the file has none) and
    processor/preprocessor_config.json (None where absent: Qwen3-VL's sizes); `plus`: a
    JoyImageEditPlusPipeline's (several pictures)."""

    vision: ComponentWeights | None = None
    processor_config: dict[str, Any] | None = None
    plus: bool = False


def joyimage_family(path: str | os.PathLike[str]) -> str | None:
    """"joyimage-edit" for a diffusers folder whose model_index.json names a
    JoyImageEditPipeline, "joyimage-edit-plus" for a JoyImageEditPlusPipeline's, None for
    anything else (a broken JSON file is left for loading to name)."""
    root = Path(path)
    return _CLASSES.get(str(pipeline_class(root))) if root.is_dir() else None


def load_joyimage_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                         variant: str | None = None) -> JoyImageWeights:
    """Lazy weights of the JoyImage Edit diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError
    naming the file or folder when it is not a JoyImageEditPipeline (or its Plus) or a part
    is missing."""
    root = Path(path)
    kind = pipeline_class(root)
    plus = kind == "JoyImageEditPlusPipeline"
    pipeline_index(root, str(kind) if kind in _CLASSES else "JoyImageEditPipeline",
                   _COMPONENTS)
    extra: dict[str, Any] = {}

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        if name != "text_encoder":
            return config, refs
        vision, tower_refs = config.get("vision_config"), vision_refs(refs)
        if isinstance(vision, dict) and tower_refs:
            extra["vision"] = ComponentWeights("vision", vision, tower_refs,
                                               dtype=resolve_dtype(dtype))
        return qwen3_vl_text_config(config, "JoyImage Edit"), language_model_refs(refs)

    parts = dit_weights(root, dtype=dtype, variant=variant, skip=(), adapt=adapt)
    tokenizer = root / "tokenizer"
    pixels = root / "processor" / "preprocessor_config.json"
    return JoyImageWeights(
        scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
        tokenizer_dir=qwen_tokenizer(tokenizer if tokenizer.is_dir() else root / "processor"),
        processor_config=read_json(pixels) if pixels.is_file() else None, plus=plus,
        **parts, **extra)  # type: ignore[arg-type]
