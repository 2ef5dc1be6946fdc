"""Diffusers folders of AuraFlow (`AuraFlowPipeline`: fal's AuraFlow v0.1-v0.3, and the
models built on it): transformer/ (AuraFlowTransformer2DModel), text_encoder/ (transformers'
UMT5EncoderModel: every block its own relative position bias), tokenizer/ (a tokenizer.json;
AuraFlow's is Pile-T5's Llama-style SentencePiece, </s> appended), vae/ (SDXL's 4-channel
AutoencoderKL) and scheduler/ (FlowMatchEulerDiscreteScheduler, a constant shift).

    weights = load_auraflow_folder("AuraFlow-v0.3")
    transformer = AuraFlowTransformer2DModel(weights.transformer.config)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..weights import TensorRef

__all__ = ["AuraFlowWeights", "auraflow_family", "load_auraflow_folder", "pad_token"]

_CLASS = "AuraFlowPipeline"


class AuraFlowWeights(DiTWeights):
    """An AuraFlow folder's lazy component weights, scheduler config and tokenizer folder."""


def auraflow_family(path: str | os.PathLike[str]) -> str | None:
    """"auraflow" for a diffusers folder whose model_index.json names an AuraFlowPipeline,
    None for anything else (a broken JSON file is left for loading to name)."""
    root = Path(path)
    return "auraflow" if root.is_dir() and pipeline_class(root) == _CLASS else None


def pad_token(tokenizer_dir: Path) -> str:
    """The token the prompts are padded with: tokenizer_config.json's `pad_token` (a string or
    transformers' {"content": ...}), else T5's <pad>. The padding is masked in the text
    encoder and its states zeroed, so the choice never reaches the picture."""
    config_file = tokenizer_dir / "tokenizer_config.json"
    try:
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    except (OSError, ValueError) as error:
        raise WeightsError(f"{config_file}: not readable JSON ({error})") from None
    token = config.get("pad_token") if isinstance(config, dict) else None
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else "<pad>"


def _keep(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
          ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    return config, refs


def load_auraflow_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                         variant: str | None = None, skip: tuple[str, ...] = ()
                         ) -> AuraFlowWeights:
    """Lazy weights of the AuraFlow diffusers folder `path`; `skip` ("transformer"): what a
    single file replaces (None, and the folder need not hold it). `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError
    naming the file or folder when it is not an AuraFlow pipeline or a part is missing."""
    root = Path(path)
    pipeline_index(root, _CLASS, tuple(c for c in DIT_COMPONENTS if c not in skip))
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (the "
                           "tokenizer the text encoder reads prompts with; transformers "
                           "writes one: AutoTokenizer.from_pretrained(folder)"
                           ".save_pretrained(folder))")
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=skip, adapt=_keep)
    return AuraFlowWeights(scheduler_config=read_json(root / "scheduler" /
                                                      "scheduler_config.json"),
                           tokenizer_dir=tokenizer, **parts)  # type: ignore[arg-type]
