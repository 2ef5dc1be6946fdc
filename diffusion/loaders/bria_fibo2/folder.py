"""Diffusers folders of Bria FIBO 2 (`BriaFibo2Pipeline`): transformer/
(BriaFibo2Transformer2DModel), text_encoder/ (transformers' Qwen3VLForConditionalGeneration:
its language model, and apart its vision tower, the reader of the pictures to edit;
`lm_head` left out), processor/
(Qwen3VLProcessor: the Qwen tokenizer's tokenizer.json, or vocab.json and merges.txt, and
preprocessor_config.json, the picture preparation's sizes, where the folder has one), vae/
(AutoencoderKLFlux2, FLUX.2's 32-channel VAE) and scheduler/
(FlowMatchEulerDiscreteScheduler with a dynamic shift).

    weights = load_bria_fibo2_folder("Fibo-2.0-dev")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DiTWeights, dit_weights
from ..qwen_image.folder import language_model_refs, qwen_tokenizer, vision_refs
from ..qwen_image.folder21 import qwen3_vl_text_config
from ..weights import ComponentWeights, TensorRef, resolve_dtype

__all__ = ["BriaFibo2Weights", "bria_fibo2_family", "load_bria_fibo2_folder"]

_CLASS = "BriaFibo2Pipeline"
_COMPONENTS = ("transformer", "vae", "text_encoder", "processor", "scheduler")
_TRAINING_STATE = "bn.num_batches_tracked"  # the VAE's batch-norm counter


@dataclass
class BriaFibo2Weights(DiTWeights):
    """A FIBO 2 folder's lazy component weights, its scheduler config, the folder of its
    tokenizer (processor/), the text encoder's vision tower (Qwen3VLVisionModel's config and
    tensors; None where the file has none) and processor/preprocessor_config.json (None where
    absent: Qwen3-VL's sizes)."""

    vision: ComponentWeights | None = None
    processor_config: dict[str, Any] | None = None


def bria_fibo2_family(path: str | os.PathLike[str]) -> str | None:
    """"bria-fibo2" for a diffusers folder whose model_index.json names a BriaFibo2Pipeline,
    None for anything else (a broken JSON file is left for loading to name)."""
    root = Path(path)
    return "bria-fibo2" if root.is_dir() and pipeline_class(root) == _CLASS else None


def load_bria_fibo2_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                           variant: str | None = None) -> BriaFibo2Weights:
    """Lazy weights of the Bria FIBO 2 diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError
    naming the file or folder when it is not a BriaFibo2Pipeline or a part is missing."""
    root = Path(path)
    pipeline_index(root, _CLASS, _COMPONENTS)
    extra: dict[str, Any] = {}

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        """The text encoder's language model (Qwen3-VL's text config and tensors) and its
        vision tower apart; the VAE's tensors less its batch-norm counter."""
        if name == "vae":
            return config, {key: ref for key, ref in refs.items() if key != _TRAINING_STATE}
        if name != "text_encoder":
            return config, refs
        tower, tower_refs = config.get("vision_config"), vision_refs(refs)
        if isinstance(tower, dict) and tower_refs:
            extra["vision"] = ComponentWeights("vision", tower, tower_refs,
                                               dtype=resolve_dtype(dtype))
        return qwen3_vl_text_config(config, "Bria FIBO 2"), language_model_refs(refs)

    parts = dit_weights(root, dtype=dtype, variant=variant, skip=(), adapt=adapt)
    pixels = root / "processor" / "preprocessor_config.json"
    return BriaFibo2Weights(
        scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
        tokenizer_dir=qwen_tokenizer(root / "processor"),
        processor_config=read_json(pixels) if pixels.is_file() else None,
        **parts, **extra)  # type: ignore[arg-type]
