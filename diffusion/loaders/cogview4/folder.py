"""Diffusers folders of CogView4 (`CogView4Pipeline`): transformer/
(CogView4Transformer2DModel), text_encoder/ (transformers' GlmModel, GLM-4-9B; a
GlmForCausalLM's `model.` prefix dropped and its `lm_head` left out), tokenizer/ (GLM's
tokenizer.json), vae/ (a 16-channel AutoencoderKL) and scheduler/
(FlowMatchEulerDiscreteScheduler, its shift linear in mu).

    weights = load_cogview4_folder("CogView4-6B")
    transformer = CogView4Transformer2DModel(weights.transformer.config)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..weights import TensorRef

__all__ = ["cogview4_family", "load_cogview4_folder"]

_CLASS = "CogView4Pipeline"


def cogview4_family(path: str | os.PathLike[str]) -> str | None:
    """"cogview4" for a diffusers folder whose model_index.json names a CogView4Pipeline,
    None for anything else (a broken JSON file is left for loading to name)."""
    root = Path(path)
    return "cogview4" if root.is_dir() and pipeline_class(root) == _CLASS else None


def _glm(root: Path, config: dict[str, Any], refs: dict[str, TensorRef]
         ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    """GlmModel's config (model_type "glm", as LLMTextModel reads it) and tensors under its
    names."""
    if config.get("model_type", "glm") != "glm":
        raise WeightsError(f"{root / 'text_encoder' / 'config.json'}: model_type "
                           f"{config.get('model_type')!r}; CogView4's text encoder is GLM-4 "
                           "(model_type glm)")
    kept = {key.removeprefix("model."): ref for key, ref in refs.items()
            if not key.startswith("lm_head.")}
    return {**config, "model_type": "glm"}, kept


def load_cogview4_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                         variant: str | None = None) -> DiTWeights:
    """Lazy weights of the CogView4 diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError
    naming the file or folder when it is not a CogView4Pipeline or a part is missing."""
    root = Path(path)
    pipeline_index(root, _CLASS, DIT_COMPONENTS)

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        return _glm(root, config, refs) if name == "text_encoder" else (config, refs)

    parts = dit_weights(root, dtype=dtype, variant=variant, skip=(), adapt=adapt)
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (the "
                           "tokenizer the text encoder reads prompts with)")
    return DiTWeights(scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
                      tokenizer_dir=tokenizer, **parts)  # type: ignore[arg-type]
