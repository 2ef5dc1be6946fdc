"""An LLM text encoder in one file, as ComfyUI ships Z-Image's (`qwen_3_4b.safetensors`, bf16
or scaled fp8): transformers' Qwen3 names, bare or under `model.` (a causal LM's `lm_head`
left out), read lazily with the config from the tensor shapes (`config`, a folder's
text_encoder/config.json, laid under them for what shapes do not say: the rotary base)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.safetensors import SafetensorsFile
from ..keymaps.dit_keys import block_count
from ..weights import ComponentWeights, TensorRef, resolve_dtype

__all__ = ["is_llm_file", "load_llm_file"]

_MARKER = "layers.0.self_attn.q_proj.weight"
# Qwen3's settings the shapes do not give (Qwen3-4B's config.json)
_QWEN3 = {"model_type": "qwen3", "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6,
          "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": True}


def _prefix(file: SafetensorsFile) -> str:
    return "model." if "model." + _MARKER in file else ""


def is_llm_file(file: SafetensorsFile) -> bool:
    """The file holds a decoder-only LLM's layers (transformers' names, bare or under
    `model.`)."""
    return _prefix(file) + _MARKER in file


def load_llm_file(path: str | os.PathLike[str], *, dtype: Any = None,
                  config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy LLMTextModel weights of a Qwen3 text encoder file, `.config` from the shapes over
    `config` (or Qwen3-4B's settings). WeightsError naming the file when it holds no LLM
    layers. ComfyUI: `CLIPLoader(type="lumina2")` of `qwen_3_4b.safetensors`."""
    file = SafetensorsFile(Path(path))
    if not is_llm_file(file):
        raise WeightsError(f"{file.path}: no layers.0.self_attn.q_proj.weight tensor: not a "
                           "Qwen3 text encoder file (Z-Image's is qwen_3_4b.safetensors)")
    prefix = _prefix(file)
    norm = prefix + "layers.0.self_attn.q_norm.weight"
    if norm not in file:
        raise WeightsError(f"{file.path}: its attention has no q/k norms: not a Qwen3 text "
                           "encoder (Z-Image reads prompts with Qwen3)")
    head_dim = file.shape(norm)[0]
    vocab, hidden = file.shape(prefix + "embed_tokens.weight")
    derived = {
        "vocab_size": vocab, "hidden_size": hidden, "head_dim": head_dim,
        "num_hidden_layers": block_count(file, prefix, "layers."),
        "num_attention_heads": file.shape(prefix + _MARKER)[0] // head_dim,
        "num_key_value_heads": file.shape(prefix + "layers.0.self_attn.k_proj.weight")[0]
        // head_dim,
        "intermediate_size": file.shape(prefix + "layers.0.mlp.gate_proj.weight")[0],
    }
    refs = {key[len(prefix):]: TensorRef(file, key, file.shape(key)) for key in file.keys()
            if key.startswith(prefix) and not key.startswith("lm_head.")}
    return ComponentWeights("text_encoder", {**_QWEN3, **dict(config or {}), **derived}, refs,
                            dtype=resolve_dtype(dtype))
