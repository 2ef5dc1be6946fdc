"""Diffusers folders of NVIDIA Cosmos Predict2 Text2Image (`Cosmos2TextToImagePipeline`):
transformer/ (CosmosTransformer3DModel), text_encoder/ (transformers' T5EncoderModel,
T5-11B's encoder), tokenizer/ (its tokenizer.json), vae/ (AutoencoderKLWan, Wan 2.1's) and
scheduler/ (FlowMatchEulerDiscreteScheduler over Karras sigmas); and of Cosmos Predict2.5
(`Cosmos2_5_PredictBasePipeline`): the same with text_encoder/ Qwen2.5-VL (its language
model read, the vision tower left), tokenizer/ Qwen's and scheduler/ UniPC on flow sigmas.
The folders' safety_checker entry (cosmos_guardrail, a separate download) is not read.

Each component goes through the safetensors walk (`.fp16` variants, sharded
`.safetensors.index.json`) into lazy `ComponentWeights`; the models' own `load_state_dict`
checks the keys.

    weights = load_cosmos_folder("Cosmos-Predict2-2B-Text2Image")
    transformer = CosmosTransformer3DModel(weights.transformer.config)
    transformer.load_state_dict(weights.transformer)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..weights import TensorRef

__all__ = ["CosmosWeights", "cosmos_family", "load_cosmos25_folder", "load_cosmos_folder"]

_FAMILIES = {"Cosmos2TextToImagePipeline": "cosmos2-t2i",
             "Cosmos2VideoToWorldPipeline": "cosmos2-v2w",
             "Cosmos2_5_PredictBasePipeline": "cosmos25"}


class CosmosWeights(DiTWeights):
    """A Cosmos folder's lazy component weights, its scheduler config and tokenizer folder."""


def cosmos_family(path: str | os.PathLike[str]) -> str | None:
    """"cosmos2-t2i" for a diffusers folder whose model_index.json names a
    Cosmos2TextToImagePipeline, "cosmos2-v2w" for a Cosmos2VideoToWorldPipeline, "cosmos25"
    for a Cosmos2_5_PredictBasePipeline, None for
    anything else (a broken JSON file is left for
    loading to name)."""
    return _FAMILIES.get(pipeline_class(Path(path)) or "")


def load_cosmos_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                       variant: str | None = None,
                       pipeline: str = "Cosmos2TextToImagePipeline") -> CosmosWeights:
    """Lazy weights of the Cosmos Predict2 Text2Image diffusers folder `path` (or of another
    `pipeline` of T5 and the same parts: Cosmos2VideoToWorldPipeline). `dtype`: None (as
    stored; bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16".
    WeightsError naming the file or folder when it is not such a pipeline or a component is
    missing."""
    root = Path(path)
    pipeline_index(root, pipeline, DIT_COMPONENTS)
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=(), adapt=_as_stored)
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (the "
                           "T5 tokenizer the text encoder reads prompts with)")
    return CosmosWeights(scheduler_config=read_json(root / "scheduler" /
                                                    "scheduler_config.json"),
                         tokenizer_dir=tokenizer, **parts)  # type: ignore[arg-type]


def load_cosmos25_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                         variant: str | None = None) -> CosmosWeights:
    """Lazy weights of the Cosmos Predict2.5 diffusers folder `path` (the text encoder's
    language model alone), as `load_cosmos_folder`'s."""
    from ..qwen_image.folder import language_model_config, language_model_refs, qwen_tokenizer

    root = Path(path)
    pipeline_index(root, "Cosmos2_5_PredictBasePipeline", DIT_COMPONENTS)

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        if name != "text_encoder":
            return config, refs
        return language_model_config(config), language_model_refs(refs)

    parts = dit_weights(root, dtype=dtype, variant=variant, skip=(), adapt=adapt)
    return CosmosWeights(scheduler_config=read_json(root / "scheduler" /
                                                    "scheduler_config.json"),
                         tokenizer_dir=qwen_tokenizer(root / "tokenizer"),
                         **parts)  # type: ignore[arg-type]


def _as_stored(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
               ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    return config, refs
