"""Diffusers folders of Bria FIBO (`BriaFiboPipeline`; FIBO Edit's `BriaFiboEditPipeline`, the
same parts): transformer/
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

__all__ = ["BRIA_FIBO_CLASSES", "BriaFiboWeights", "bria_fibo_family",
           "load_bria_fibo_folder"]

# the pipeline classes and the families they load as
BRIA_FIBO_CLASSES = {"BriaFiboPipeline": "bria-fibo", "BriaFiboEditPipeline": "bria-fibo-edit"}


class BriaFiboWeights(DiTWeights):
    """A FIBO folder's lazy component weights, its scheduler config and tokenizer folder."""


def bria_fibo_family(path: str | os.PathLike[str]) -> str | None:
    """"bria-fibo" for a diffusers folder whose model_index.json names a BriaFiboPipeline
    ("bria-fibo-edit": BriaFiboEditPipeline), None for anything else (a broken JSON file is
    left for loading to name)."""
    root = Path(path)
    return BRIA_FIBO_CLASSES.get(pipeline_class(root) or "") if root.is_dir() else None


def load_bria_fibo_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                          variant: str | None = None) -> BriaFiboWeights:
    """Lazy weights of the Bria FIBO (or FIBO Edit) diffusers folder `path`. `dtype`: None
    (as stored; bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16".
    WeightsError naming the file or folder when it is not a BriaFibo(Edit)Pipeline or a part
    is missing."""
    root = Path(path)
    edit = "BriaFiboEditPipeline"
    pipeline_index(root, edit if pipeline_class(root) == edit else "BriaFiboPipeline",
                   DIT_COMPONENTS)
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
