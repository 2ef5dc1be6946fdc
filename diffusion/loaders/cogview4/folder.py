"""Diffusers folders of CogView4 (`CogView4Pipeline`, and `CogView4ControlPipeline`: the
control model, whose transformer reads twice the latents' channels): transformer/
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

_CLASSES = ("CogView4Pipeline", "CogView4ControlPipeline")


def cogview4_family(path: str | os.PathLike[str]) -> str | None:
    """"cogview4" for a diffusers folder whose model_index.json names a CogView4Pipeline or a
    CogView4ControlPipeline, None for anything else (a broken JSON file is left for loading
    to name)."""
    root = Path(path)
    return "cogview4" if root.is_dir() and pipeline_class(root) in _CLASSES else None


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
    found = pipeline_class(root)
    pipeline_index(root, found if found in _CLASSES else _CLASSES[0], DIT_COMPONENTS)

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        return _glm(root, config, refs) if name == "text_encoder" else (config, refs)

    parts = dit_weights(root, dtype=dtype, variant=variant, skip=(), adapt=adapt)
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        # GLM-4-9B's own repository ships a tiktoken tokenizer.model (ChatGLM4Tokenizer);
        # CogView4-6B's tokenizer/ is transformers' fast one saved from glm-4-9b-hf
        tiktoken = (" (its tokenizer.model is GLM-4's tiktoken file, not read here)"
                    if (tokenizer / "tokenizer.model").is_file() else "")
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing"
                           f"{tiktoken}; copy tokenizer/ from THUDM/CogView4-6B (or "
                           "THUDM/glm-4-9b-hf), which ships tokenizer.json")
    return DiTWeights(scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
                      tokenizer_dir=tokenizer, **parts)  # type: ignore[arg-type]
