"""LTX-2's prompt parts from its diffusers folder: `text_encoder/` (transformers'
Gemma3ForConditionalGeneration: its language model's config and tensors; the vision tower's and
projector's are skipped, no prompt uses them), `connectors/` (diffusers' LTX2TextConnectors)
and `tokenizer/` (Gemma's tokenizer.json).

    weights = load_ltx2_text("LTX-2", dtype="float16")
    text_model, connectors, tokenizer = ltx2_text_models(weights, device=device)
    video, audio, mask = ltx2_prompt_states(text_model, connectors, tokenizer, "a fox runs")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpucore import Device

from ...models.llm import LLMTextModel
from ...models.ltx2_connectors import LTX2TextConnectors
from ...text.llm_tokenizer import LLMTokenizer
from ..component import load_component
from ..errors import WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..weights import ComponentWeights, TensorRef, resolve_dtype

__all__ = ["LTX2TextWeights", "gemma3_language_refs", "gemma3_text_config", "load_ltx2_text",
           "ltx2_text_models"]

# where the language model's tensors sit: transformers 5's layout, and the one it (and 4.5x)
# saves, `language_model.model.`; the vision tower, projector and lm_head under other names
_LANGUAGE_PREFIXES = ("model.language_model.", "language_model.model.", "language_model.")


@dataclass
class LTX2TextWeights:
    """An LTX-2 folder's lazy text encoder (Gemma 3's language model) and connectors
    weights, and its tokenizer folder."""

    text_encoder: ComponentWeights
    connectors: ComponentWeights
    tokenizer_dir: Path


def gemma3_text_config(config: dict[str, Any]) -> dict[str, Any]:
    """LLMTextModel's config of a Gemma 3 `text_encoder/config.json`: its `text_config`
    (model_type "gemma3_text"), or the file itself where it is a text model's; WeightsError
    for another model's."""
    text = config.get("text_config") if config.get("model_type") == "gemma3" else config
    if not isinstance(text, dict) or text.get("model_type", "gemma3_text") != "gemma3_text":
        raise WeightsError(f"the text encoder's config.json is a {config.get('model_type')!r} "
                           "model's; LTX-2's text encoder is Gemma 3 "
                           "(Gemma3ForConditionalGeneration): give the LTX-2 folder's")
    return {**text, "model_type": "gemma3_text"}


def gemma3_language_refs(refs: dict[str, TensorRef]) -> dict[str, TensorRef]:
    """The language model's tensors under LLMTextModel's names (`embed_tokens.weight`,
    `layers.0.self_attn.q_proj.weight`, ...); the vision tower, the projector and lm_head
    (tied to the embeddings) left out."""
    out = {}
    for key, ref in refs.items():
        if "lm_head." in key:  # transformers 4's language_model.lm_head.weight too
            continue
        for prefix in _LANGUAGE_PREFIXES:
            if key.startswith(prefix):
                out[key.removeprefix(prefix)] = ref
                break
    return out


def load_ltx2_text(path: str | os.PathLike[str], *, dtype: Any = None,
                   variant: str | None = None) -> LTX2TextWeights:
    """Lazy weights of the LTX-2 diffusers folder `path`'s text encoder and connectors, and
    its tokenizer folder. `dtype`: None (as stored; bfloat16 read as float32), "float16" or
    "float32"; `variant`: e.g. "fp16". WeightsError naming the file or folder missing."""
    root = Path(path)
    resolved = resolve_dtype(dtype)
    config = gemma3_text_config(read_json(root / "text_encoder" / "config.json"))
    refs, where = weight_refs(root / "text_encoder", "model", variant)
    language = gemma3_language_refs(refs)
    if "embed_tokens.weight" not in language:
        raise WeightsError(f"{where}: no Gemma 3 language model in it (no "
                           "language_model.embed_tokens.weight): give the LTX-2 folder's "
                           "text_encoder/")
    connectors, _ = weight_refs(root / "connectors", "diffusion_pytorch_model", variant)
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (the "
                           "Gemma tokenizer the text encoder reads prompts with)")
    return LTX2TextWeights(
        text_encoder=ComponentWeights("text_encoder", config, language, dtype=resolved),
        connectors=ComponentWeights("connectors", read_json(root / "connectors" / "config.json"),
                                    connectors, dtype=resolved),
        tokenizer_dir=tokenizer)


def ltx2_text_models(weights: LTX2TextWeights, *, dtype: Any = "float32",
                     device: Device | None = None
                     ) -> tuple[LLMTextModel, LTX2TextConnectors, LLMTokenizer]:
    """The text encoder and connectors of `dtype` ("float16": float32 residual streams, the
    norms' weights float32) on `device` holding `weights`, and the tokenizer: what
    models.ltx2_prompt.ltx2_prompt_states reads a prompt with."""
    text_model = load_component(LLMTextModel(weights.text_encoder.config, dtype=dtype,
                                             device=device), weights.text_encoder)
    connectors = load_component(LTX2TextConnectors(weights.connectors.config, dtype=dtype,
                                                   device=device), weights.connectors)
    return text_model, connectors, LLMTokenizer(weights.tokenizer_dir)
