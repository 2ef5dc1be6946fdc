"""Diffusers folders of PRX (`PRXPipeline`): transformer/ (PRXTransformer2DModel),
text_encoder/ (transformers' T5GemmaEncoder: its tensors renamed to Gemma 2's,
models/t5gemma.py; a whole T5Gemma's decoder left out), tokenizer/ (Gemma's; its
tokenizer_config.json's model_max_length is how far PRX pads a prompt), vae/ (FLUX.1's
16-channel AutoencoderKL, or for the -dc-ae models Sana's 32-channel AutoencoderDC) and
scheduler/ (FlowMatchEulerDiscreteScheduler).

    weights = load_prx_folder("prx-512-t2i-sft")
    transformer = PRXTransformer2DModel(weights.transformer.config)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...models.t5gemma import t5gemma_key
from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..weights import TensorRef

__all__ = ["PRXWeights", "load_prx_folder", "prx_family"]

_CLASS = "PRXPipeline"
# PRXPipeline reads the tokenizer's model_max_length; this where the config has none (or
# transformers' "no limit" sentinel)
_MAX_TOKENS = 256


@dataclass
class PRXWeights(DiTWeights):
    """A PRX folder's lazy component weights, scheduler config, tokenizer folder, the
    prompt's padded length, the side it draws at by default (model_index.json's
    default_sample_size: PRXPipeline's 512 where it has none) and whether its VAE is a
    DC-AE."""

    max_tokens: int = _MAX_TOKENS
    sample_size: int = 512
    dc_ae: bool = False


def prx_family(path: str | os.PathLike[str]) -> str | None:
    """"prx" for a diffusers folder whose model_index.json names a PRXPipeline ("prx-dc-ae"
    where its VAE is an AutoencoderDC), None for anything else (a broken JSON file is left
    for loading to name)."""
    root = Path(path)
    if not root.is_dir() or pipeline_class(root) != _CLASS:
        return None
    vae = read_json(root / "model_index.json").get("vae")
    return "prx-dc-ae" if isinstance(vae, list) and vae[1:2] == ["AutoencoderDC"] else "prx"


def _max_tokens(folder: Path) -> int:
    """The tokenizer's model_max_length (PRX's 256), _MAX_TOKENS where it says none."""
    config = folder / "tokenizer_config.json"
    value = read_json(config).get("model_max_length") if config.is_file() else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 1 <= value <= 8192:
        return int(value)
    return _MAX_TOKENS


def load_prx_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                    variant: str | None = None) -> PRXWeights:
    """Lazy weights of the PRX diffusers folder `path`. `dtype`: None (as stored; bfloat16
    read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError naming
    the file or folder when it is not a PRX pipeline, a part is missing, or its VAE is
    neither FLUX.1's AutoencoderKL nor an AutoencoderDC."""
    root = Path(path)
    index = pipeline_index(root, _CLASS, DIT_COMPONENTS)
    vae_class = (index.get("vae") or [None, None])[1]
    if vae_class not in ("AutoencoderKL", "AutoencoderDC"):
        raise WeightsError(f"{root / 'model_index.json'}: a PRX folder with a {vae_class} VAE "
                           "is not supported; PRX's VAEs are FLUX.1's AutoencoderKL and "
                           "Sana's AutoencoderDC")

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        if name != "text_encoder":
            return config, refs
        return config, {t5gemma_key(key): ref for key, ref in refs.items()
                        if "decoder." not in key and not key.startswith("lm_head")}

    parts: dict[str, Any] = dit_weights(root, dtype=dtype, variant=variant, skip=(),
                                        adapt=adapt)
    size = index.get("default_sample_size")
    return PRXWeights(scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
                      tokenizer_dir=root / "tokenizer", max_tokens=_max_tokens(root / "tokenizer"),
                      sample_size=int(size) if isinstance(size, int) and size > 0 else 512,
                      dc_ae=vae_class == "AutoencoderDC", **parts)
