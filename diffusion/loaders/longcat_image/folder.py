"""Diffusers folders of LongCat-Image (`LongCatImagePipeline`): transformer/
(LongCatImageTransformer2DModel), text_encoder/ (transformers'
Qwen2_5_VLForConditionalGeneration, whose language model alone is read: the vision tower and
`lm_head` serve only the prompt rewrite, which is not run), tokenizer/ (Qwen's), vae/ (FLUX.1's
16-channel AutoencoderKL) and scheduler/ (FlowMatchEulerDiscreteScheduler with FLUX's dynamic
shift). text_processor/ (Qwen2VLProcessor, for the rewrite) is not read.

    weights = load_longcat_image_folder("LongCat-Image")
    transformer = LongCatImageTransformer2DModel(weights.transformer.config)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..qwen_image.folder import language_model_config, language_model_refs, qwen_tokenizer
from ..weights import TensorRef

__all__ = ["LONGCAT_CLASSES", "load_longcat_image_folder", "longcat_image_family"]

_CLASS = "LongCatImagePipeline"
# the pipeline classes and the families they load as
LONGCAT_CLASSES = {_CLASS: "longcat-image", "LongCatImageEditPipeline": "longcat-image-edit"}


def longcat_image_family(path: str | os.PathLike[str]) -> str | None:
    """"longcat-image" for a diffusers folder whose model_index.json names a
    LongCatImagePipeline ("longcat-image-edit": LongCatImageEditPipeline), None for anything
    else (a broken JSON file is left for loading to name)."""
    root = Path(path)
    return LONGCAT_CLASSES.get(pipeline_class(root) or "") if root.is_dir() else None


def load_longcat_image_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                              variant: str | None = None) -> DiTWeights:
    """Lazy weights of the LongCat-Image diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError
    naming the file or folder when it is not a LongCat-Image pipeline or a part is
    missing."""
    root = Path(path)
    pipeline_index(root, _CLASS, DIT_COMPONENTS)
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=(), adapt=_adapt)
    return DiTWeights(scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
                      tokenizer_dir=qwen_tokenizer(root / "tokenizer"),
                      **parts)  # type: ignore[arg-type]


def _adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
           ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    """The text encoder's language model: Qwen2.5-VL's text config and tensors."""
    if name != "text_encoder":
        return config, refs
    return language_model_config(config), language_model_refs(refs)
