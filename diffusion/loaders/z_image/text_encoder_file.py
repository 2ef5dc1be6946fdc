"""An LLM text encoder in one file, as ComfyUI ships Z-Image's (`qwen_3_4b.safetensors`, bf16 or
scaled fp8) and Qwen-Image's (`qwen_2.5_vl_7b.safetensors`: Qwen2.5-VL's language model beside
its vision tower, which is left out) and FLUX.2 dev's (`mistral_3_small_flux2_bf16.
safetensors`, `..._fp8.safetensors`: Mistral Small 3.1's language model under `model.`, its
`vision_tower.`, `multi_modal_projector.` and `tekken_model` left out), Lumina 2's
(`gemma_2_2b_fp16.safetensors`: Gemma-2-2B, its tokenizer's `spiece_model` left out) and
HunyuanVideo's (`llava_llama3_fp16.safetensors`: llava-llama-3-8b's language model under
`model.`): transformers' names, bare, under `model.` or under `model.language_model.`
(transformers 5's Qwen2.5-VL; a causal LM's `lm_head` left out); or a llama.cpp GGUF of it
(`Qwen3-4B-Q8_0.gguf`, ComfyUI-GGUF's text encoders: its matrices kept quantized by
load_component), its names mapped to transformers' as
ComfyUI-GGUF maps them (`blk.N.attn_q` -> `layers.N.self_attn.q_proj`, `token_embd` ->
`embed_tokens`, ...; Qwen's rotary layout is transformers', so nothing is permuted; a
"llama" GGUF's (Mistral's) q/k rows are put back in transformers' order, LlamaGGUFFile). Read
lazily with the config from the tensor shapes (`config`, a folder's text_encoder/config.json,
laid under them for what shapes do not say: the rotary base)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.gguf_file import GGUFFile
from ..formats.gguf_llama import LlamaGGUFFile
from ..formats.safetensors import SafetensorsFile
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["is_llm_file", "load_llm_file"]

_MARKER = "layers.0.self_attn.q_proj.weight"
# Qwen3's settings the shapes do not give (Qwen3-4B's config.json)
_QWEN3 = {"model_type": "qwen3", "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6,
          "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": True}


# Qwen2.5-VL's language model (Qwen-Image's encoder): Qwen2's layers, q/k/v biases, no q/k
# norms; its heads are 128 wide unless the config says otherwise
_QWEN25VL = {"model_type": "qwen2_5_vl_text", "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6,
             "hidden_act": "silu"}
# Mistral Small 3.1's language model (FLUX.2 dev's encoder): no q/k norms, no biases, heads
# 128 wide (not hidden / heads), its rotary base 1e9
_MISTRAL = {"model_type": "mistral", "rope_theta": 1_000_000_000.0, "rms_norm_eps": 1e-5,
            "hidden_act": "silu", "sliding_window": None, "tie_word_embeddings": False}
# Gemma-2-2B (Lumina Image 2.0's encoder): heads 256 wide (not hidden / heads), soft-capped
# scores; the rest Gemma2Config's defaults (models.llm)
_GEMMA2 = {"model_type": "gemma2", "rope_theta": 10_000.0, "rms_norm_eps": 1e-6,
           "hidden_activation": "gelu_pytorch_tanh", "attn_logit_softcapping": 50.0}
# llava-llama-3-8b's language model (HunyuanVideo's encoder): Llama 3 8B's layers, no q/k
# norms, no biases, heads 128 wide, its rotary base 5e5 unscaled
_LLAMA = {"model_type": "llama", "rope_theta": 500_000.0, "rms_norm_eps": 1e-5,
          "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": False}
_USUAL = {"qwen3": _QWEN3, "qwen2_5_vl": _QWEN25VL, "mistral": _MISTRAL, "gemma2": _GEMMA2,
          "llama": _LLAMA}
_KINDS = {"qwen3": ("Qwen3", "Z-Image", "qwen_3_4b.safetensors"),
          "qwen2_5_vl": ("Qwen2.5-VL", "Qwen-Image", "qwen_2.5_vl_7b.safetensors"),
          "mistral": ("Mistral Small 3.1", "FLUX.2 dev",
                      "mistral_3_small_flux2_bf16.safetensors"),
          "gemma2": ("Gemma 2", "Lumina 2", "gemma_2_2b_fp16.safetensors"),
          "llama": ("llava-llama-3-8b", "HunyuanVideo", "llava_llama3_fp16.safetensors")}

_GGUF_TOP = {"token_embd": "embed_tokens", "output_norm": "norm"}
_GGUF_LAYER = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
               "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
               "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
               "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
               "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def _prefix(file: TensorFile) -> str:
    for prefix in ("model.language_model.", "language_model.model.", "model."):
        if prefix + _MARKER in file:
            return prefix
    return ""


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
            if key.startswith(prefix) and not key.startswith(("lm_head.", "visual."))
            and key != "spiece_model"  # ComfyUI's Gemma 2 file carries its tokenizer
            and not key[len(prefix):].startswith(("visual.", "vision_tower.",
                                                  "multi_modal_projector."))}


def is_llm_file(file: TensorFile) -> bool:
    """The file holds a decoder-only LLM's layers (transformers' names, bare or under
    `model.`; llama.cpp's in a GGUF)."""
    return _MARKER in _names(file)


def load_llm_file(path: str | os.PathLike[str], *, dtype: Any = None,
                  config: Mapping[str, Any] | None = None, kind: str = "qwen3"
                  ) -> ComponentWeights:
    """Lazy LLMTextModel weights of a text encoder file (.safetensors or .gguf) of `kind`:
    "qwen3" (Z-Image's, FLUX.2 klein's), "qwen2_5_vl" (Qwen2.5-VL's language model,
    Qwen-Image's), "mistral" (Mistral Small 3.1's language model, FLUX.2 dev's), "gemma2"
    (Gemma-2-2B, Lumina 2's; the file's other entries, a tokenizer's, left out) or "llama"
    (llava-llama-3-8b's language model, HunyuanVideo's); `.config`
    from the shapes over `config` (a folder's text_encoder config, the language model's for
    Qwen2.5-VL and Mistral 3) or the model's usual settings. WeightsError naming the file when
    it holds no layers of that kind. ComfyUI: `CLIPLoader(type="lumina2")` of
    `qwen_3_4b.safetensors`, `CLIPLoader(type="qwen_image")` of `qwen_2.5_vl_7b.safetensors`,
    `CLIPLoader(type="flux2")` of `mistral_3_small_flux2_bf16.safetensors`,
    `DualCLIPLoader(type="hunyuan_video")`'s `llava_llama3_fp16.safetensors`."""
    name, family, usual = _KINDS[kind]
    path = Path(path)
    file: TensorFile = GGUFFile(path) if path.suffix.lower() == ".gguf" else (
        SafetensorsFile(path))
    if isinstance(file, GGUFFile) and file.architecture == "llama":  # Mistral's, permuted
        file = LlamaGGUFFile(path)
    names = _names(file)
    if _MARKER not in names:
        raise WeightsError(f"{path}: no layers.0.self_attn.q_proj.weight tensor: not a "
                           f"{name} text encoder file ({family}'s is {usual})")
    normed = "layers.0.self_attn.q_norm.weight" in names
    if kind == "qwen3" and not normed:
        raise WeightsError(f"{path}: its attention has no q/k norms: not a Qwen3 text "
                           "encoder (Z-Image and FLUX.2 klein read prompts with Qwen3)")
    if kind == "qwen2_5_vl" and (normed or "layers.0.self_attn.q_proj.bias" not in names):
        raise WeightsError(f"{path}: its attention has " + (
            "q/k norms (a Qwen3?)" if normed else "no q/k/v biases") + ": not a Qwen2.5-VL "
            f"text encoder (Qwen-Image reads prompts with Qwen2.5-VL-7B's, {usual})")
    if kind == "mistral" and (normed or "layers.0.self_attn.q_proj.bias" in names):
        raise WeightsError(f"{path}: its attention has " + (
            "q/k norms (a Qwen3?)" if normed else "q/k/v biases (a Qwen2?)") + ": not a "
            f"Mistral text encoder (FLUX.2 dev reads prompts with Mistral Small 3.1's, {usual})")
    if kind == "llama" and (normed or "layers.0.self_attn.q_proj.bias" in names):
        raise WeightsError(f"{path}: its attention has " + (
            "q/k norms (a Qwen3?)" if normed else "q/k/v biases (a Qwen2?)") + ": not a "
            f"Llama text encoder (HunyuanVideo reads prompts with llava-llama-3-8b's, {usual})")
    if kind == "gemma2" and (normed or "layers.0.pre_feedforward_layernorm.weight" not in names):
        raise WeightsError(f"{path}: its layers have " + (
            "q/k norms (a Gemma 3 or Qwen3?)" if normed else "no pre_feedforward_layernorm")
            + f": not a Gemma 2 text encoder (Lumina 2 reads prompts with Gemma-2-2B, {usual})")

    def shape(name: str) -> tuple[int, ...]:
        return tuple(file.shape(names[name]))

    given = dict(config or {})
    vocab, hidden = shape("embed_tokens.weight")
    if normed:
        head_dim = shape("layers.0.self_attn.q_norm.weight")[0]
    elif kind in ("mistral", "gemma2"):
        head_dim = int(given.get("head_dim") or (128 if kind == "mistral" else 256))
    elif given.get("num_attention_heads"):
        head_dim = hidden // int(given["num_attention_heads"])
    else:
        head_dim = 128
    usual_config = _USUAL[kind]
    derived: dict[str, Any] = {
        "model_type": usual_config["model_type"], "vocab_size": vocab, "hidden_size": hidden,
        "head_dim": head_dim,
        "num_hidden_layers": 1 + max(int(n.split(".")[1]) for n in names
                                     if n.startswith("layers.")),
        "num_attention_heads": shape(_MARKER)[0] // head_dim,
        "num_key_value_heads": shape("layers.0.self_attn.k_proj.weight")[0] // head_dim,
        "intermediate_size": shape("layers.0.mlp.gate_proj.weight")[0],
    }
    refs = {name: TensorRef(file, key, tuple(file.shape(key))) for name, key in names.items()}
    return ComponentWeights("text_encoder", {**usual_config, **given, **derived}, refs,
                            dtype=resolve_dtype(dtype))
