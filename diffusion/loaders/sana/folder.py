"""Diffusers folders of NVIDIA's Sana models: `SanaPipeline` (Sana 1.0 / 1.5, 512 to 4096
pixels) and `SanaSprintPipeline` (Sana Sprint, 1-4 steps): transformer/
(SanaTransformer2DModel), text_encoder/ (transformers' Gemma2Model, or a Gemma2ForCausalLM
whose `model.` prefix and `lm_head` are dropped here), tokenizer/ (Gemma's tokenizer.json),
vae/ (AutoencoderDC) and scheduler/ (DPMSolverMultistepScheduler on flow sigmas; Sprint's
SCMScheduler).

Each component goes through the safetensors walk (`.fp16` variants, sharded
`.safetensors.index.json`) into lazy `ComponentWeights`; the models' own `load_state_dict`
checks the keys.

    weights = load_sana_folder("Sana_1600M_1024px_diffusers")
    transformer = SanaTransformer2DModel(weights.transformer.config)
    transformer.load_state_dict(weights.transformer)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import causal_lm_refs, pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..weights import TensorRef

__all__ = ["SanaWeights", "load_sana_folder", "sana_family"]

# model_index.json's class: the family it loads as
FAMILIES = {"SanaPipeline": "sana", "SanaSprintPipeline": "sana-sprint"}


@dataclass
class SanaWeights(DiTWeights):
    """A Sana folder's lazy component weights, its scheduler config, tokenizer folder and
    whether it is Sana Sprint (`SanaSprintPipeline`)."""

    sprint: bool = False


def sana_family(path: str | os.PathLike[str]) -> str | None:
    """"sana" for a diffusers folder whose model_index.json names a SanaPipeline,
    "sana-sprint" for a SanaSprintPipeline, None for anything else (a broken JSON file is
    left for loading to name)."""
    return FAMILIES.get(pipeline_class(Path(path)) or "")


def load_sana_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                     variant: str | None = None, skip: tuple[str, ...] = ()) -> SanaWeights:
    """Lazy weights of the Sana diffusers folder `path`. `dtype`: None (as stored; bfloat16
    read as float32), "float16" or "float32"; `variant`: e.g. "fp16"; `skip`: "transformer"
    and/or "text_encoder", left out (None). WeightsError naming the file or folder when it
    is not a Sana pipeline or a component is missing."""
    root = Path(path)
    found = pipeline_class(root)
    pipeline_index(root, found if found in FAMILIES else "SanaPipeline", DIT_COMPONENTS)
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=skip, adapt=_adapt)
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (the "
                           "Gemma tokenizer the text encoder reads prompts with)")
    return SanaWeights(scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
                       tokenizer_dir=tokenizer, sprint=found == "SanaSprintPipeline",
                       **parts)  # type: ignore[arg-type]


def _adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
           ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    """A Gemma2ForCausalLM text encoder's weights as its base model's (a Gemma2Model's)."""
    return config, (causal_lm_refs(refs) if name == "text_encoder" else refs)
