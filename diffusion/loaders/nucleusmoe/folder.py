"""Diffusers folders of NucleusMoE-Image (`NucleusMoEImagePipeline`): transformer/
(NucleusMoEImageTransformer2DModel), text_encoder/ (transformers'
Qwen3VLForConditionalGeneration: its language model is read, the vision tower and `lm_head`
left out), processor/ (Qwen3VLProcessor: its tokenizer is read), vae/ (AutoencoderKLQwenImage,
Qwen-Image's 16-channel VAE) and scheduler/ (FlowMatchEulerDiscreteScheduler with FLUX's
dynamic shift).

    weights = load_nucleusmoe_folder("NucleusMoE-Image")
    transformer = NucleusMoEImageTransformer2DModel(weights.transformer.config)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DiTWeights, dit_weights
from ..qwen_image.folder import language_model_refs, qwen_tokenizer
from ..qwen_image.folder21 import qwen3_vl_text_config
from ..weights import TensorRef

__all__ = ["NucleusMoEWeights", "load_nucleusmoe_folder", "nucleusmoe_family"]

_CLASS = "NucleusMoEImagePipeline"
_COMPONENTS = ("transformer", "vae", "text_encoder", "processor", "scheduler")


class NucleusMoEWeights(DiTWeights):
    """A NucleusMoE-Image folder's lazy component weights, scheduler config and tokenizer
    folder (processor/)."""


def nucleusmoe_family(path: str | os.PathLike[str]) -> str | None:
    """"nucleus-moe" for a diffusers folder whose model_index.json names a
    NucleusMoEImagePipeline, None for anything else (a broken JSON file is left for loading
    to name)."""
    root = Path(path)
    return "nucleus-moe" if root.is_dir() and pipeline_class(root) == _CLASS else None


def load_nucleusmoe_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                           variant: str | None = None) -> NucleusMoEWeights:
    """Lazy weights of the NucleusMoE-Image diffusers folder `path`. `dtype`: None (as
    stored; bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16".
    WeightsError naming the file or folder when it is not a NucleusMoE-Image pipeline or a
    part is missing."""
    root = Path(path)
    pipeline_index(root, _CLASS, _COMPONENTS)
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=(), adapt=_adapt)
    return NucleusMoEWeights(scheduler_config=read_json(root / "scheduler" /
                                                        "scheduler_config.json"),
                             tokenizer_dir=qwen_tokenizer(root / "processor"),
                             **parts)  # type: ignore[arg-type]


def _adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
           ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    """The text encoder's language model: Qwen3-VL's text config and tensors."""
    if name != "text_encoder":
        return config, refs
    return qwen3_vl_text_config(config, "NucleusMoE-Image"), language_model_refs(refs)
