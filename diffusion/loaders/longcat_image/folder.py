"""Diffusers folders of LongCat-Image (`LongCatImagePipeline`) and LongCat-Image-Edit
(`LongCatImageEditPipeline`): transformer/ (LongCatImageTransformer2DModel), text_encoder/
(transformers' Qwen2_5_VLForConditionalGeneration: its language model, and for the edit model
its vision tower too; `lm_head` serves only the prompt rewrite, which is not run), tokenizer/
(Qwen's), vae/ (FLUX.1's 16-channel AutoencoderKL) and scheduler/
(FlowMatchEulerDiscreteScheduler with FLUX's dynamic shift). text_processor/ (Qwen2VLProcessor)
gives the edit model's picture sizes (its preprocessor_config.json); the text-to-image model's
is not read.

    weights = load_longcat_image_folder("LongCat-Image")
    transformer = LongCatImageTransformer2DModel(weights.transformer.config)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..qwen_image.folder import (
    language_model_config,
    language_model_refs,
    qwen_tokenizer,
    vision_refs,
)
from ..weights import ComponentWeights, TensorRef, resolve_dtype

__all__ = ["LONGCAT_CLASSES", "LongCatWeights", "load_longcat_image_folder",
           "longcat_image_family"]

_CLASS, _EDIT_CLASS = "LongCatImagePipeline", "LongCatImageEditPipeline"
# the pipeline classes and the families they load as
LONGCAT_CLASSES = {_CLASS: "longcat-image", _EDIT_CLASS: "longcat-image-edit"}


@dataclass
class LongCatWeights(DiTWeights):
    """A LongCat-Image folder's lazy component weights, scheduler config and tokenizer
    folder; an edit model's vision tower and processor config too."""

    vision: ComponentWeights | None = None
    processor_config: dict[str, Any] | None = None


def longcat_image_family(path: str | os.PathLike[str]) -> str | None:
    """"longcat-image" for a diffusers folder whose model_index.json names a
    LongCatImagePipeline ("longcat-image-edit": LongCatImageEditPipeline), None for anything
    else (a broken JSON file is left for loading to name)."""
    root = Path(path)
    return LONGCAT_CLASSES.get(pipeline_class(root) or "") if root.is_dir() else None


def load_longcat_image_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                              variant: str | None = None) -> LongCatWeights:
    """Lazy weights of the LongCat-Image (or LongCat-Image-Edit) diffusers folder `path`.
    `dtype`: None (as stored; bfloat16 read as float32), "float16" or "float32"; `variant`:
    e.g. "fp16". WeightsError naming the file or folder when it is not a LongCat-Image
    pipeline or a part is missing."""
    root = Path(path)
    edit = pipeline_class(root) == _EDIT_CLASS
    pipeline_index(root, _EDIT_CLASS if edit else _CLASS,
                   DIT_COMPONENTS + (("text_processor",) if edit else ()))
    extra: dict[str, Any] = {}

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        if name != "text_encoder":
            return config, refs
        if edit:
            vision = config.get("vision_config")
            if not isinstance(vision, dict):
                raise WeightsError(f"{root / name / 'config.json'}: no vision_config; the "
                                   "edit model's text encoder is Qwen2.5-VL with its vision "
                                   "tower")
            extra["vision"] = ComponentWeights("vision", vision, vision_refs(refs),
                                               dtype=resolve_dtype(dtype))
        return language_model_config(config), language_model_refs(refs)

    parts: dict[str, Any] = {**dit_weights(root, dtype=dtype, variant=variant, skip=(),
                                           adapt=adapt), **extra}
    if edit:
        parts["processor_config"] = read_json(root / "text_processor" /
                                              "preprocessor_config.json")
    return LongCatWeights(scheduler_config=read_json(root / "scheduler" /
                                                     "scheduler_config.json"),
                          tokenizer_dir=qwen_tokenizer(root / "tokenizer"),
                          **parts)  # type: ignore[arg-type]
