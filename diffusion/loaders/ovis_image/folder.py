"""Diffusers folders of Ovis-Image (`OvisImagePipeline`): transformer/
(OvisImageTransformer2DModel), text_encoder/ (transformers' Qwen3Model, or a Qwen3ForCausalLM
whose `model.` prefix and `lm_head` are dropped here), tokenizer/ (Qwen's), vae/ (FLUX.1's
16-channel AutoencoderKL) and scheduler/ (FlowMatchEulerDiscreteScheduler with FLUX's dynamic
shift).

    weights = load_ovis_image_folder("Ovis-Image-7B")
    transformer = OvisImageTransformer2DModel(weights.transformer.config)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..formats.diffusers_folder import causal_lm_refs, pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..qwen_image.folder import qwen_tokenizer
from ..weights import TensorRef

__all__ = ["OvisImageWeights", "load_ovis_image_folder", "ovis_image_family"]

_CLASS = "OvisImagePipeline"


class OvisImageWeights(DiTWeights):
    """An Ovis-Image folder's lazy component weights, scheduler config and tokenizer folder."""


def ovis_image_family(path: str | os.PathLike[str]) -> str | None:
    """"ovis-image" for a diffusers folder whose model_index.json names an OvisImagePipeline,
    None for anything else (a broken JSON file is left for loading to name)."""
    root = Path(path)
    return "ovis-image" if root.is_dir() and pipeline_class(root) == _CLASS else None


def load_ovis_image_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                           variant: str | None = None) -> OvisImageWeights:
    """Lazy weights of the Ovis-Image diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError
    naming the file or folder when it is not an Ovis-Image pipeline or a part is missing."""
    root = Path(path)
    pipeline_index(root, _CLASS, DIT_COMPONENTS)
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=(), adapt=_adapt)
    return OvisImageWeights(scheduler_config=read_json(root / "scheduler" /
                                                       "scheduler_config.json"),
                            tokenizer_dir=qwen_tokenizer(root / "tokenizer"),
                            **parts)  # type: ignore[arg-type]


def _adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
           ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    """A Qwen3ForCausalLM text encoder's weights as its base model's (a Qwen3Model's pass)."""
    return config, (causal_lm_refs(refs) if name == "text_encoder" else refs)
