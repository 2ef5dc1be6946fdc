"""Diffusers folders of Lumina Image 2.0 and its fine-tunes (`Lumina2Pipeline`, or its older
name `Lumina2Text2ImgPipeline`): transformer/ (Lumina2Transformer2DModel), text_encoder/
(transformers' Gemma2Model, or a Gemma2ForCausalLM whose `model.` prefix and `lm_head` are
dropped here), tokenizer/ (Gemma's tokenizer.json), vae/ (AutoencoderKL, FLUX's) and
scheduler/ (FlowMatchEulerDiscreteScheduler).

Each component goes through the safetensors walk (`.fp16` variants, sharded
`.safetensors.index.json`) into lazy `ComponentWeights`; the models' own `load_state_dict`
checks the keys.

    weights = load_lumina2_folder("Lumina-Image-2.0")
    transformer = Lumina2Transformer2DModel(weights.transformer.config)
    transformer.load_state_dict(weights.transformer)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import causal_lm_refs, pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..weights import TensorRef

__all__ = ["Lumina2Weights", "load_lumina2_folder", "lumina2_family"]

# diffusers' name, and the one it had before 0.33 (still an alias of it)
_CLASSES = ("Lumina2Pipeline", "Lumina2Text2ImgPipeline")


class Lumina2Weights(DiTWeights):
    """A Lumina 2 folder's lazy component weights, its scheduler config and tokenizer
    folder."""


def lumina2_family(path: str | os.PathLike[str]) -> str | None:
    """"lumina2" for a diffusers folder whose model_index.json names a Lumina2Pipeline, None
    for anything else (a broken JSON file is left for loading to name)."""
    return "lumina2" if pipeline_class(Path(path)) in _CLASSES else None


def load_lumina2_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                        variant: str | None = None, skip: tuple[str, ...] = ()
                        ) -> Lumina2Weights:
    """Lazy weights of the Lumina 2 diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16"; `skip`:
    "transformer" and/or "text_encoder", left out (None). WeightsError naming the file or
    folder when it is not a Lumina 2 pipeline or a component is missing."""
    root = Path(path)
    found = pipeline_class(root)
    pipeline_index(root, found if found in _CLASSES else _CLASSES[0], DIT_COMPONENTS)
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=skip, adapt=_adapt)
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (the "
                           "Gemma tokenizer the text encoder reads prompts with)")
    return Lumina2Weights(scheduler_config=read_json(root / "scheduler" /
                                                     "scheduler_config.json"),
                          tokenizer_dir=tokenizer, **parts)  # type: ignore[arg-type]


def _adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
           ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    """A Gemma2ForCausalLM text encoder's weights as its base model's (a Gemma2Model's)."""
    return config, (causal_lm_refs(refs) if name == "text_encoder" else refs)
