"""Diffusers folders of Z-Image (`ZImagePipeline`): transformer/ (ZImageTransformer2DModel),
text_encoder/ (transformers' Qwen3Model, or a Qwen3ForCausalLM whose `model.` prefix and
`lm_head` are dropped here), tokenizer/ (Qwen's tokenizer.json), vae/ (AutoencoderKL, FLUX's)
and scheduler/ (FlowMatchEulerDiscreteScheduler); Z-Image Omni's (`ZImageOmniPipeline`) the
same with siglip/ and siglip_processor/ (its SigLIP2 vision tower, loaders.z_image.siglip).

Each component goes through the safetensors walk (`.fp16` variants, sharded
`.safetensors.index.json`) into lazy `ComponentWeights`; the models' own `load_state_dict`
checks the keys.

    weights = load_zimage_folder("Z-Image-Turbo")
    transformer = ZImageTransformer2DModel(weights.transformer.config)
    transformer.load_state_dict(weights.transformer)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import (
    causal_lm_refs,
    pipeline_class,
    pipeline_index,
    read_json,
)
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..weights import TensorRef
from .file import zimage_file_family

__all__ = ["ZImageWeights", "load_zimage_folder", "zimage_family", "zimage_omni_family"]

_CLASS = "ZImagePipeline"
_OMNI = "ZImageOmniPipeline"


class ZImageWeights(DiTWeights):
    """A Z-Image folder's lazy component weights, its scheduler config and tokenizer folder."""


def zimage_family(path: str | os.PathLike[str]) -> str | None:
    """"z-image" for a diffusers folder whose model_index.json names a ZImagePipeline or a
    Z-Image transformer file (`zimage_file_family`), None for anything else (a broken JSON
    file is left for loading to name)."""
    root = Path(path)
    if not root.is_dir():
        return zimage_file_family(root)
    return "z-image" if pipeline_class(root) == _CLASS else None


def zimage_omni_family(path: str | os.PathLike[str]) -> str | None:
    """"z-image-omni" for a diffusers folder whose model_index.json names a
    ZImageOmniPipeline, None for anything else."""
    return "z-image-omni" if pipeline_class(Path(path)) == _OMNI else None


def load_zimage_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                       variant: str | None = None, skip: tuple[str, ...] = (),
                       omni: bool = False) -> ZImageWeights:
    """Lazy weights of the Z-Image diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16"; `skip`:
    "transformer" and/or "text_encoder", left out (None; single files replace them, and the
    folder need not hold them). WeightsError naming the file or folder when it is not a
    Z-Image pipeline or a component is missing. `omni`: a Z-Image Omni folder (its SigLIP2
    tower is left to loaders.z_image.siglip)."""
    root = Path(path)
    if omni:
        pipeline_index(root, _OMNI, (*DIT_COMPONENTS, "siglip", "siglip_processor"))
    else:
        pipeline_index(root, _CLASS, DIT_COMPONENTS)
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=skip, adapt=_adapt)
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (the "
                           "Qwen tokenizer the text encoder reads prompts with)")
    return ZImageWeights(scheduler_config=read_json(root / "scheduler" /
                                                    "scheduler_config.json"),
                         tokenizer_dir=tokenizer, **parts)  # type: ignore[arg-type]


def _adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
           ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    """A Qwen3ForCausalLM text encoder's weights as its base model's (a Qwen3Model's pass)."""
    return config, (causal_lm_refs(refs) if name == "text_encoder" else refs)
