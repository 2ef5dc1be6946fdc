"""Diffusers folders of Bria FIBO (`BriaFiboPipeline`): transformer/
(BriaFiboTransformer2DModel), text_encoder/ (transformers' SmolLM3ForCausalLM: its `model.`
prefix dropped, `lm_head` left out), tokenizer/ (SmolLM3's tokenizer.json), vae/ (Wan 2.2's
AutoencoderKLWan, 48 channels at 16x) and scheduler/ (FlowMatchEulerDiscreteScheduler).

Each component goes through the safetensors walk (`.fp16` variants, sharded
`.safetensors.index.json`) into lazy `ComponentWeights`; the models' own `load_state_dict`
checks the keys.

    weights = load_bria_fibo_folder("FIBO")
    transformer = BriaFiboTransformer2DModel(weights.transformer.config)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import causal_lm_refs, pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..weights import TensorRef

__all__ = ["BriaFiboWeights", "bria_fibo_family", "load_bria_fibo_folder"]

_CLASS = "BriaFiboPipeline"


class BriaFiboWeights(DiTWeights):
    """A FIBO folder's lazy component weights, its scheduler config and tokenizer folder."""


def bria_fibo_family(path: str | os.PathLike[str]) -> str | None:
    """"bria-fibo" for a diffusers folder whose model_index.json names a BriaFiboPipeline,
    None for anything else (a broken JSON file is left for loading to name)."""
    root = Path(path)
    return "bria-fibo" if root.is_dir() and pipeline_class(root) == _CLASS else None


def load_bria_fibo_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                          variant: str | None = None) -> BriaFiboWeights:
    """Lazy weights of the Bria FIBO diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError
    naming the file or folder when it is not a BriaFiboPipeline or a part is missing."""
    root = Path(path)
    pipeline_index(root, _CLASS, DIT_COMPONENTS)
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=(), adapt=_base_model)
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (the "
                           "SmolLM3 tokenizer the text encoder reads prompts with)")
    return BriaFiboWeights(scheduler_config=read_json(root / "scheduler" /
                                                      "scheduler_config.json"),
                           tokenizer_dir=tokenizer, **parts)  # type: ignore[arg-type]


def _base_model(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
                ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    """SmolLM3ForCausalLM's weights as its base model's (SmolLM3Model's)."""
    return config, (causal_lm_refs(refs) if name == "text_encoder" else refs)
