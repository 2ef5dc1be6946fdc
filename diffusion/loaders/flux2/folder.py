"""Diffusers folders of FLUX.2 klein (`Flux2KleinPipeline`) and FLUX.2 dev (`Flux2Pipeline`,
whose text_encoder/ is transformers' Mistral3ForConditionalGeneration: its language model's
weights are read as a Mistral text model, `text_config` its config; the vision tower and
projector are left out): transformer/
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
)
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..weights import TensorRef
from .file import flux2_file_family

__all__ = ["Flux2Weights", "flux2_distilled", "flux2_family", "load_flux2_folder",
           "mistral3_text"]

_CLASS = "Flux2KleinPipeline"
_DEV_CLASS = "Flux2Pipeline"
# the language model's prefixes in a Mistral3ForConditionalGeneration file (the saved
# layout, and transformers 5's in-memory one)
_MISTRAL3_PREFIXES = ("language_model.model.", "model.language_model.")
_TRAINING_STATE = ("bn.num_batches_tracked",)  # the VAE's batch-norm counter
# what a part missing from the folder can come as, for its error to say
_FILES = {(_CLASS, "transformer"): "the model's file, with this folder as --base",
          (_DEV_CLASS, "transformer"): "the model's file, flux2-dev.safetensors or a GGUF, "
                                       "with this folder as --base",
          (_CLASS, "text_encoder"): "--text-encoder qwen_3_4b.safetensors, or Qwen3-8B's "
                                    "for klein 9B",
          (_DEV_CLASS, "text_encoder"): "--text-encoder "
                                        "mistral_3_small_flux2_bf16.safetensors or a GGUF"}


@dataclass
class Flux2Weights(DiTWeights):
    """A FLUX.2 klein folder's lazy component weights, scheduler config, tokenizer folder
    and whether it is step-distilled (no CFG)."""

    distilled: bool

def flux2_family(path: str | os.PathLike[str]) -> str | None:
    """"flux2-klein" for a diffusers folder whose model_index.json names a
    Flux2KleinPipeline or a FLUX.2 transformer file (`flux2_file_family`), "flux2-dev" for a
    Flux2Pipeline folder, None for anything else (a broken JSON file is left for loading to
    name)."""
    root = Path(path)
    if not root.is_dir():
        return flux2_file_family(root)
    return {_CLASS: "flux2-klein", _DEV_CLASS: "flux2-dev"}.get(pipeline_class(root) or "")


def mistral3_text(config: dict[str, Any], refs: dict[str, Any]
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Mistral3ForConditionalGeneration's language model as a Mistral text model: its
    `text_config` and the weights under its language model's prefix, the prefix dropped
    (the vision tower, projector and lm_head left out); a config without `text_config` (a
    plain Mistral) passes as it is, `model.` dropped as a causal LM's."""
    if "text_config" not in config:
        return config, causal_lm_refs(refs)
    text = {"model_type": "mistral", **config["text_config"]}
    out = {key.removeprefix(prefix): ref for key, ref in refs.items()
           for prefix in _MISTRAL3_PREFIXES if key.startswith(prefix)}
    return text, out


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
    Flux2KleinPipeline or Flux2Pipeline or a component is missing."""
    root = Path(path)
    kind = _DEV_CLASS if pipeline_class(root) == _DEV_CLASS else _CLASS
    index = pipeline_index(root, kind, DIT_COMPONENTS)

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        if name == "text_encoder" and kind == _DEV_CLASS:  # Mistral3's language model
            config, refs = mistral3_text(config, refs)
        elif name == "text_encoder":  # a causal LM's weights as its base model's
            refs = causal_lm_refs(refs)
        return config, {key: ref for key, ref in refs.items() if key not in _TRAINING_STATE}

    hints = {name: _FILES[kind, name] for name in ("transformer", "text_encoder")}
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=skip, adapt=adapt,
                        hints=hints)
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (the "
                           "tokenizer the text encoder reads prompts with)")
    return Flux2Weights(scheduler_config=read_json(root / "scheduler" /
                                                   "scheduler_config.json"),
                        tokenizer_dir=tokenizer, distilled=bool(index.get("is_distilled")),
                        **parts)  # type: ignore[arg-type]
