"""Diffusers folders of Bria 3.2 (`BriaPipeline`): transformer/ (BriaTransformer2DModel),
text_encoder/ (transformers' T5EncoderModel, T5-XXL), tokenizer/ (T5's tokenizer.json; the
bundled T5 tokenizer where the folder has none), vae/ (an AutoencoderKL, its latents scaled
and shifted as its config says) and scheduler/ (FlowMatchEulerDiscreteScheduler). The
optional image_encoder/ and feature_extractor/ (IP-Adapter parts BriaPipeline registers but
never runs) are not read.

    weights = load_bria_folder("BRIA-3.2")
    transformer = BriaTransformer2DModel(weights.transformer.config)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, dit_weights
from ..weights import ComponentWeights, TensorRef

__all__ = ["BriaWeights", "bria_family", "load_bria_folder"]

_CLASS = "BriaPipeline"


@dataclass
class BriaWeights:
    """A Bria folder's lazy component weights, scheduler config and tokenizer folder (None:
    the bundled T5 tokenizer)."""

    transformer: ComponentWeights
    vae: ComponentWeights
    text_encoder: ComponentWeights
    scheduler_config: dict[str, Any]
    tokenizer_dir: Path | None


def bria_family(path: str | os.PathLike[str]) -> str | None:
    """"bria" for a diffusers folder whose model_index.json names a BriaPipeline, None for
    anything else (a broken JSON file is left for loading to name)."""
    root = Path(path)
    return "bria" if root.is_dir() and pipeline_class(root) == _CLASS else None


def _as_stored(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
               ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    """Every part as diffusers and transformers save it: T5EncoderModel's names are ours."""
    return config, refs


def load_bria_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                     variant: str | None = None) -> BriaWeights:
    """Lazy weights of the Bria diffusers folder `path`. `dtype`: None (as stored; bfloat16
    read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError naming the
    file or folder when it is not a BriaPipeline folder or a part is missing."""
    root = Path(path)
    pipeline_index(root, _CLASS, tuple(name for name in DIT_COMPONENTS if name != "tokenizer"))
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=(), adapt=_as_stored)
    transformer, vae, encoder = parts["transformer"], parts["vae"], parts["text_encoder"]
    assert transformer is not None and vae is not None and encoder is not None  # none skipped
    tokenizer = root / "tokenizer"
    return BriaWeights(transformer=transformer, vae=vae, text_encoder=encoder,
                       scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
                       tokenizer_dir=tokenizer if (tokenizer / "tokenizer.json").is_file()
                       else None)
