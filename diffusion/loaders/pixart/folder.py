"""Diffusers folders of PixArt-α (`PixArtAlphaPipeline`) and PixArt-Σ (`PixArtSigmaPipeline`):
transformer/ (PixArtTransformer2DModel), text_encoder/ (transformers' T5EncoderModel, T5 v1.1
XXL's encoder), tokenizer/ (T5's: a tokenizer.json, or only spiece.model, which is T5 v1.1's
own vocabulary: the bundled one then reads the prompts, diffusion.text.t5_tokenizer), vae/
(AutoencoderKL, SD's; SDXL's for Σ) and scheduler/ (DPMSolverMultistepScheduler).

Each component goes through the safetensors walk (`.fp16` variants, sharded
`.safetensors.index.json`) into lazy `ComponentWeights`; the models' own `load_state_dict`
checks the keys.

    weights = load_pixart_folder("PixArt-Sigma-XL-2-1024-MS")
    transformer = PixArtTransformer2DModel(weights.transformer.config)
    transformer.load_state_dict(weights.transformer)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..weights import TensorRef

__all__ = ["PixArtWeights", "load_pixart_folder", "pixart_family"]

# model_index.json's class: the family it loads as
FAMILIES = {"PixArtSigmaPipeline": "pixart-sigma", "PixArtAlphaPipeline": "pixart-alpha"}


@dataclass
class PixArtWeights(DiTWeights):
    """A PixArt folder's lazy component weights, its scheduler config, its tokenizer.json
    (None: the folder has only spiece.model, T5 v1.1's) and whether it is PixArt-α."""

    tokenizer_file: Path | None = None
    alpha: bool = False


def pixart_family(path: str | os.PathLike[str]) -> str | None:
    """"pixart-sigma" for a diffusers folder whose model_index.json names a
    PixArtSigmaPipeline, "pixart-alpha" for a PixArtAlphaPipeline, None for anything else (a
    broken JSON file is left for loading to name)."""
    return FAMILIES.get(pipeline_class(Path(path)) or "")


def load_pixart_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                       variant: str | None = None, skip: tuple[str, ...] = ()
                       ) -> PixArtWeights:
    """Lazy weights of the PixArt diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16"; `skip`:
    "transformer", left out (None: a single file replaces it). WeightsError naming the file
    or folder when it is not a PixArt pipeline or a component is missing."""
    root = Path(path)
    found = pipeline_class(root)
    pipeline_index(root, found if found in FAMILIES else "PixArtSigmaPipeline", DIT_COMPONENTS)
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=skip, adapt=_as_stored)
    tokenizer = root / "tokenizer"
    file = tokenizer / "tokenizer.json"
    return PixArtWeights(scheduler_config=read_json(root / "scheduler" /
                                                    "scheduler_config.json"),
                         tokenizer_dir=tokenizer, tokenizer_file=file if file.is_file() else None,
                         alpha=found == "PixArtAlphaPipeline",
                         **parts)  # type: ignore[arg-type]


def _as_stored(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
               ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    return config, refs
