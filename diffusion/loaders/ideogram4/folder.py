"""Diffusers folders of Ideogram 4 (`Ideogram4Pipeline`): transformer/ and
unconditional_transformer/ (two Ideogram4Transformer2DModel, the second the asymmetric CFG's
text-free model), text_encoder/ (transformers' Qwen3VLModel: its language model; the vision
tower is left out), tokenizer/ (Qwen's), vae/ (FLUX.2's AutoencoderKLFlux2, whose batch norm's
training counter is left out) and scheduler/ (FlowMatchEulerDiscreteScheduler, over which the
pipeline lays its own logit-normal sigmas). prompt_enhancer_head/ (the optional prompt rewrite's
LM head) is not read.

    weights = load_ideogram4_folder("ideogram-v4")
    transformer = Ideogram4Transformer2DModel(weights.transformer.config)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json, weight_refs
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..qwen_image.folder import language_model_refs, qwen_tokenizer
from ..qwen_image.folder21 import qwen3_vl_text_config
from ..weights import ComponentWeights, TensorRef, resolve_dtype

__all__ = ["Ideogram4Weights", "ideogram4_family", "load_ideogram4_folder"]

_CLASS = "Ideogram4Pipeline"
_UNCONDITIONAL = "unconditional_transformer"
_TRAINING_STATE = ("bn.num_batches_tracked",)  # the VAE's batch-norm counter


@dataclass
class Ideogram4Weights(DiTWeights):
    """An Ideogram 4 folder's lazy component weights (the unconditional transformer's
    too), scheduler config and tokenizer folder."""

    unconditional_transformer: ComponentWeights | None = None


def ideogram4_family(path: str | os.PathLike[str]) -> str | None:
    """"ideogram4" for a diffusers folder whose model_index.json names an Ideogram4Pipeline,
    None for anything else (a broken JSON file is left for loading to name)."""
    root = Path(path)
    return "ideogram4" if root.is_dir() and pipeline_class(root) == _CLASS else None


def load_ideogram4_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                          variant: str | None = None) -> Ideogram4Weights:
    """Lazy weights of the Ideogram 4 diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError
    naming the file or folder when it is not an Ideogram4Pipeline or a part is missing."""
    root = Path(path)
    pipeline_index(root, _CLASS, (*DIT_COMPONENTS, _UNCONDITIONAL))

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        if name == "text_encoder":
            return qwen3_vl_text_config(config, "Ideogram 4"), language_model_refs(refs)
        return config, {key: ref for key, ref in refs.items() if key not in _TRAINING_STATE}

    parts = dit_weights(root, dtype=dtype, variant=variant, skip=(), adapt=adapt)
    refs, _where = weight_refs(root / _UNCONDITIONAL, "diffusion_pytorch_model", variant)
    unconditional = ComponentWeights(_UNCONDITIONAL, read_json(root / _UNCONDITIONAL /
                                                               "config.json"),
                                     refs, dtype=resolve_dtype(dtype))
    return Ideogram4Weights(scheduler_config=read_json(root / "scheduler" /
                                                       "scheduler_config.json"),
                            tokenizer_dir=qwen_tokenizer(root / "tokenizer"),
                            unconditional_transformer=unconditional,
                            **parts)  # type: ignore[arg-type]
