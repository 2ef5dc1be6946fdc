"""An LLM text encoder in one file, as ComfyUI ships Z-Image's (`qwen_3_4b.safetensors`, bf16
or scaled fp8): transformers' Qwen3 names, bare or under `model.` (a causal LM's `lm_head`
left out); or a llama.cpp GGUF of it (`Qwen3-4B-Q8_0.gguf`, ComfyUI-GGUF's text encoders:
its matrices kept quantized by load_component), its names mapped to transformers' as
ComfyUI-GGUF maps them (`blk.N.attn_q` -> `layers.N.self_attn.q_proj`, `token_embd` ->
`embed_tokens`, ...; Qwen's rotary layout is transformers', so nothing is permuted). Read
lazily with the config from the tensor shapes (`config`, a folder's text_encoder/config.json,
laid under them for what shapes do not say: the rotary base)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.gguf_file import GGUFFile
from ..formats.safetensors import SafetensorsFile
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["is_llm_file", "load_llm_file"]

_MARKER = "layers.0.self_attn.q_proj.weight"
# Qwen3's settings the shapes do not give (Qwen3-4B's config.json)
_QWEN3 = {"model_type": "qwen3", "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6,
          "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": True}


_GGUF_TOP = {"token_embd": "embed_tokens", "output_norm": "norm"}
_GGUF_LAYER = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
               "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
               "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
               "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
               "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def _prefix(file: TensorFile) -> str:
    return "model." if "model." + _MARKER in file else ""


def _transformers_name(key: str) -> str | None:
    """llama.cpp's name of a tensor -> transformers', None for what is left out (output)."""
    stem, _, kind = key.rpartition(".")
    if stem in _GGUF_TOP:
        return f"{_GGUF_TOP[stem]}.{kind}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _GGUF_LAYER:
        return f"layers.{parts[1]}.{_GGUF_LAYER[parts[2]]}.{kind}"
    return None


def _names(file: TensorFile) -> dict[str, str]:
    """transformers' name -> the file's, for every tensor of the model body."""
    if isinstance(file, GGUFFile):
        return {name: key for key in file.keys()
                if (name := _transformers_name(key)) is not None}
    prefix = _prefix(file)
    return {key[len(prefix):]: key for key in file.keys()
            if key.startswith(prefix) and not key.startswith("lm_head.")}


def is_llm_file(file: TensorFile) -> bool:
    """The file holds a decoder-only LLM's layers (transformers' names, bare or under
    `model.`; llama.cpp's in a GGUF)."""
    return _MARKER in _names(file)


def load_llm_file(path: str | os.PathLike[str], *, dtype: Any = None,
                  config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy LLMTextModel weights of a Qwen3 text encoder file (.safetensors or .gguf),
    `.config` from the shapes over `config` (or Qwen3-4B's settings). WeightsError naming the
    file when it holds no Qwen3 layers. ComfyUI: `CLIPLoader(type="lumina2")` of
    `qwen_3_4b.safetensors`."""
    path = Path(path)
    file: TensorFile = GGUFFile(path) if path.suffix.lower() == ".gguf" else (
        SafetensorsFile(path))
    names = _names(file)
    if _MARKER not in names:
        raise WeightsError(f"{path}: no layers.0.self_attn.q_proj.weight tensor: not a "
                           "Qwen3 text encoder file (Z-Image's is qwen_3_4b.safetensors)")
    if "layers.0.self_attn.q_norm.weight" not in names:
        raise WeightsError(f"{path}: its attention has no q/k norms: not a Qwen3 text "
                           "encoder (Z-Image reads prompts with Qwen3)")

    def shape(name: str) -> tuple[int, ...]:
        return tuple(file.shape(names[name]))

    head_dim = shape("layers.0.self_attn.q_norm.weight")[0]
    vocab, hidden = shape("embed_tokens.weight")
    derived = {
        "vocab_size": vocab, "hidden_size": hidden, "head_dim": head_dim,
        "num_hidden_layers": 1 + max(int(n.split(".")[1]) for n in names
                                     if n.startswith("layers.")),
        "num_attention_heads": shape(_MARKER)[0] // head_dim,
        "num_key_value_heads": shape("layers.0.self_attn.k_proj.weight")[0] // head_dim,
        "intermediate_size": shape("layers.0.mlp.gate_proj.weight")[0],
    }
    refs = {name: TensorRef(file, key, tuple(file.shape(key))) for name, key in names.items()}
    return ComponentWeights("text_encoder", {**_QWEN3, **dict(config or {}), **derived}, refs,
                            dtype=resolve_dtype(dtype))
