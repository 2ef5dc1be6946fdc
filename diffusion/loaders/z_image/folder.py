"""Diffusers folders of Z-Image (`ZImagePipeline`): transformer/ (ZImageTransformer2DModel),
text_encoder/ (transformers' Qwen3Model, or a Qwen3ForCausalLM whose `model.` prefix and
`lm_head` are dropped here), tokenizer/ (Qwen's tokenizer.json), vae/ (AutoencoderKL, FLUX's)
and scheduler/ (FlowMatchEulerDiscreteScheduler).

Each component goes through the safetensors walk (`.fp16` variants, sharded
`.safetensors.index.json`) into lazy `ComponentWeights`; the models' own `load_state_dict`
checks the keys.

    weights = load_zimage_folder("Z-Image-Turbo")
    transformer = ZImageTransformer2DModel(weights.transformer.config)
    transformer.load_state_dict(weights.transformer)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import (
    causal_lm_refs,
    pipeline_class,
    pipeline_index,
    read_json,
    weight_refs,
)
from ..weights import ComponentWeights, resolve_dtype
from .file import zimage_file_family

__all__ = ["ZImageWeights", "load_zimage_folder", "zimage_family"]

_CLASS = "ZImagePipeline"
_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
_STEMS = {"transformer": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
          "text_encoder": "model"}


@dataclass
class ZImageWeights:
    """A Z-Image folder's lazy component weights, its scheduler config and tokenizer folder."""

    transformer: ComponentWeights | None  # None when skipped (a single file replaces it)
    vae: ComponentWeights
    text_encoder: ComponentWeights | None  # likewise
    scheduler_config: dict[str, Any]
    tokenizer_dir: Path


def zimage_family(path: str | os.PathLike[str]) -> str | None:
    """"z-image" for a diffusers folder whose model_index.json names a ZImagePipeline or a
    Z-Image transformer file (`zimage_file_family`), None for anything else (a broken JSON
    file is left for loading to name)."""
    root = Path(path)
    if not root.is_dir():
        return zimage_file_family(root)
    return "z-image" if pipeline_class(root) == _CLASS else None


def load_zimage_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                       variant: str | None = None, skip: tuple[str, ...] = ()
                       ) -> ZImageWeights:
    """Lazy weights of the Z-Image diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16"; `skip`:
    "transformer" and/or "text_encoder", left out (None; single files replace them, and the
    folder need not hold them). WeightsError naming the file or folder when it is not a
    Z-Image pipeline or a component is missing."""
    root = Path(path)
    pipeline_index(root, _CLASS, _COMPONENTS)
    resolved = resolve_dtype(dtype)
    parts: dict[str, ComponentWeights | None] = dict.fromkeys(skip)
    for name in ("transformer", "vae", "text_encoder"):
        if name in skip:
            continue
        config = read_json(root / name / "config.json")
        refs, _where = weight_refs(root / name, _STEMS[name], variant)
        if name == "text_encoder":
            refs = causal_lm_refs(refs)
        parts[name] = ComponentWeights(name, config, refs, dtype=resolved)
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (the "
                           "Qwen tokenizer the text encoder reads prompts with)")
    return ZImageWeights(scheduler_config=read_json(root / "scheduler" /
                                                    "scheduler_config.json"),
                         tokenizer_dir=tokenizer, **parts)  # type: ignore[arg-type]
