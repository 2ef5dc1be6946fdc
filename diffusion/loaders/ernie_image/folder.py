"""Diffusers folders of ERNIE-Image (`ErnieImagePipeline`): transformer/
(ErnieImageTransformer2DModel), text_encoder/ (transformers' Mistral3Model: its language
model's weights read as a Mistral text model, `text_config` its config; the vision tower and
projector left out), tokenizer/ (Mistral's tokenizer.json), vae/ (AutoencoderKLFlux2, its
batch norm's training counter left out) and scheduler/ (FlowMatchEulerDiscreteScheduler, a
fixed shift). pe/ and pe_tokenizer/ (the optional prompt enhancer, a Ministral 3 that
rewrites the prompt) are not read: it is not run.

    weights = load_ernie_image_folder("ERNIE-Image")
    transformer = ErnieImageTransformer2DModel(weights.transformer.config)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..flux2.folder import mistral3_text
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..weights import TensorRef

__all__ = ["ErnieImageWeights", "ernie_image_family", "load_ernie_image_folder"]

_CLASS = "ErnieImagePipeline"
_TRAINING_STATE = ("bn.num_batches_tracked",)  # the VAE's batch-norm counter


@dataclass
class ErnieImageWeights(DiTWeights):
    """An ERNIE-Image folder's lazy component weights, scheduler config and tokenizer
    folder (with its tokenizer_config.json, when present)."""

    tokenizer_config: dict[str, Any]


def ernie_image_family(path: str | os.PathLike[str]) -> str | None:
    """"ernie-image" for a diffusers folder whose model_index.json names an
    ErnieImagePipeline, None for anything else (a broken JSON file is left for loading to
    name)."""
    root = Path(path)
    return "ernie-image" if pipeline_class(root) == _CLASS else None


def _language_model(config: dict[str, Any], refs: dict[str, TensorRef]
                    ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    """Mistral3Model's language model as a Mistral text model: saved under
    `language_model.model.` (as transformers 5 writes it) or, in its in-memory names,
    `language_model.` alone."""
    bare = {f"language_model.model.{key.removeprefix('language_model.')}": ref
            for key, ref in refs.items() if key.startswith("language_model.")
            and not key.startswith("language_model.model.")}
    return mistral3_text(config, {**refs, **bare})


def load_ernie_image_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                            variant: str | None = None, skip: tuple[str, ...] = ()
                            ) -> ErnieImageWeights:
    """Lazy weights of the ERNIE-Image diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16"; `skip`:
    ("transformer",) where a single file replaces it (None; the folder need not hold it).
    WeightsError naming the file or folder when it is not an ErnieImagePipeline or a part is
    missing."""
    root = Path(path)
    pipeline_index(root, _CLASS, DIT_COMPONENTS)

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        if name == "text_encoder":
            if "text_config" not in config:
                raise WeightsError(f"{root / name / 'config.json'}: no text_config; "
                                   "ERNIE-Image's text encoder is a Mistral3Model")
            config, refs = _language_model(config, refs)
        return config, {key: ref for key, ref in refs.items() if key not in _TRAINING_STATE}

    parts = dit_weights(root, dtype=dtype, variant=variant, skip=skip, adapt=adapt,
                        hints={"transformer": "the model's file, with this folder as --base"})
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (the "
                           "tokenizer the text encoder reads prompts with)")
    config_file = tokenizer / "tokenizer_config.json"
    return ErnieImageWeights(
        scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
        tokenizer_dir=tokenizer,
        tokenizer_config=read_json(config_file) if config_file.is_file() else {},
        **parts)  # type: ignore[arg-type]
