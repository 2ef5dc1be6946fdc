"""Diffusers folders of FLUX.2 klein (`Flux2KleinPipeline`): transformer/
(Flux2Transformer2DModel), text_encoder/ (transformers' Qwen3ForCausalLM, whose `model.`
prefix and `lm_head` are dropped here, or a Qwen3Model), tokenizer/ (Qwen's tokenizer.json),
vae/ (AutoencoderKLFlux2, whose batch norm's training counter is left out) and scheduler/
(FlowMatchEulerDiscreteScheduler); model_index.json's `is_distilled` says whether the model
was distilled to run without CFG.

    weights = load_flux2_folder("FLUX.2-klein-4B")
    transformer = Flux2Transformer2DModel(weights.transformer.config)
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
from .file import flux2_file_family

__all__ = ["Flux2Weights", "flux2_distilled", "flux2_family", "load_flux2_folder"]

_CLASS = "Flux2KleinPipeline"
_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
_STEMS = {"transformer": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
          "text_encoder": "model"}
_TRAINING_STATE = ("bn.num_batches_tracked",)  # the VAE's batch-norm counter


@dataclass
class Flux2Weights:
    """A FLUX.2 klein folder's lazy component weights, scheduler config, tokenizer folder
    and whether it is step-distilled (no CFG)."""

    transformer: ComponentWeights | None  # None when skipped (a single file replaces it)
    vae: ComponentWeights
    text_encoder: ComponentWeights | None  # likewise
    scheduler_config: dict[str, Any]
    tokenizer_dir: Path
    distilled: bool


def flux2_family(path: str | os.PathLike[str]) -> str | None:
    """"flux2-klein" for a diffusers folder whose model_index.json names a
    Flux2KleinPipeline or a FLUX.2 transformer file (`flux2_file_family`), None for anything
    else (a broken JSON file is left for loading to name)."""
    root = Path(path)
    if not root.is_dir():
        return flux2_file_family(root)
    return "flux2-klein" if pipeline_class(root) == _CLASS else None


def flux2_distilled(path: str | os.PathLike[str]) -> bool:
    """Whether the FLUX.2 klein folder `path` says it is step-distilled (model_index.json's
    `is_distilled`: klein 4B/9B, run without CFG); False where it cannot be read. A single
    file says it by its name, as Black Forest Labs names them: `flux-2-klein-4b` is
    distilled, `flux-2-klein-base-4b` is not."""
    if Path(path).is_file():
        return "base" not in Path(path).name.lower()
    try:
        return bool(read_json(Path(path) / "model_index.json").get("is_distilled"))
    except WeightsError:
        return False


def load_flux2_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                      variant: str | None = None, skip: tuple[str, ...] = ()) -> Flux2Weights:
    """Lazy weights of the FLUX.2 klein diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16"; `skip`:
    "transformer" and/or "text_encoder", left out (None; single files replace them, and the
    folder need not hold them). WeightsError naming the file or folder when it is not a
    Flux2KleinPipeline or a component is missing."""
    root = Path(path)
    index = pipeline_index(root, _CLASS, _COMPONENTS)
    resolved = resolve_dtype(dtype)
    parts: dict[str, ComponentWeights | None] = dict.fromkeys(skip)
    for name in ("transformer", "vae", "text_encoder"):
        if name in skip:
            continue
        config = read_json(root / name / "config.json")
        refs, _where = weight_refs(root / name, _STEMS[name], variant)
        if name == "text_encoder":  # a causal LM's weights as its base model's
            refs = causal_lm_refs(refs)
        refs = {key: ref for key, ref in refs.items() if key not in _TRAINING_STATE}
        parts[name] = ComponentWeights(name, config, refs, dtype=resolved)
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (the "
                           "Qwen tokenizer the text encoder reads prompts with)")
    return Flux2Weights(scheduler_config=read_json(root / "scheduler" /
                                                   "scheduler_config.json"),
                        tokenizer_dir=tokenizer, distilled=bool(index.get("is_distilled")),
                        **parts)  # type: ignore[arg-type]
