"""T5 encoder files as users get them, written from a transformers T5EncoderModel by the tests:
city96's GGUFs (llama.cpp's tensor names, written with the `gguf` package) and ComfyUI's scaled
float8 safetensors. Each writer returns the weights the file holds, as float32 under
transformers' names, for a reference model to run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# transformers' name -> llama.cpp's (gguf-py's MODEL_TENSOR names for MODEL_ARCH.T5ENCODER;
# ComfyUI-GGUF's T5_SD_MAP read backwards)
_LAYER = {"layer.0.layer_norm": "attn_norm", "layer.0.SelfAttention.q": "attn_q",
          "layer.0.SelfAttention.k": "attn_k", "layer.0.SelfAttention.v": "attn_v",
          "layer.0.SelfAttention.o": "attn_o",
          "layer.0.SelfAttention.relative_attention_bias": "attn_rel_b",
          "layer.1.layer_norm": "ffn_norm", "layer.1.DenseReluDense.wi_0": "ffn_gate",
          "layer.1.DenseReluDense.wi_1": "ffn_up", "layer.1.DenseReluDense.wo": "ffn_down"}


def llama_cpp_name(name: str) -> str:
    if name == "shared.weight":
        return "token_embd.weight"
    if name == "encoder.final_layer_norm.weight":
        return "enc.output_norm.weight"
    _, _, block, layer = name.removesuffix(".weight").split(".", 3)
    return f"enc.blk.{block}.{_LAYER[layer]}.weight"


# llama.cpp's type for rows that are not whole 256-value super-blocks
_K_FALLBACK = {"q4_k": "Q5_0", "q5_k": "Q5_1", "q6_k": "Q8_0"}


def random_k_blocks(shape: tuple[int, int], kind: str, seed: int) -> np.ndarray:
    """Q5_K or Q6_K super-blocks of random quants and scales for a (rows, 256 n) matrix (the
    `gguf` package dequantizes these types but does not quantize them), their scales d (and
    dmin) small enough that the values stay within about 0.25."""
    rng = np.random.default_rng(seed)
    size = {"q5_k": 176, "q6_k": 210}[kind]
    blocks = rng.integers(0, 256, (shape[0], shape[1] // 256, size), dtype=np.uint8)
    if kind == "q5_k":  # d, dmin (f16), 12 bytes of 6-bit scales and mins, qh, qs
        blocks[..., 0:4] = np.array([1e-4, 1e-4], np.float16).view(np.uint8)
    else:  # ql, qh, 16 int8 scales, d (f16)
        blocks[..., 192:208] = rng.integers(-8, 9, (*blocks.shape[:2], 16)).astype(np.int8).view(
            np.uint8)
        blocks[..., 208:210] = np.array([1e-3], np.float16).view(np.uint8)
    return blocks.reshape(shape[0], -1)


def _blocks(values: np.ndarray, kind: str) -> tuple[Any, Any]:
    """(blocks, ggml type) of a matrix in `kind`, as llama.cpp's quantizer picks per tensor:
    a K-quant's rows that are not whole 256-value super-blocks take _K_FALLBACK's type;
    Q5_K and Q6_K hold random blocks (random_k_blocks), not `values`; (None, None) where the
    rows are not whole blocks of the type at all (the writer keeps those F16)."""
    import gguf

    from diffusion.loaders.formats.gguf_kquant import quantize_q4_k

    if kind == "q4_k" and values.shape[1] % 256 == 0:
        return quantize_q4_k(values), gguf.GGMLQuantizationType.Q4_K
    if kind in ("q5_k", "q6_k") and values.shape[1] % 256 == 0:
        return (random_k_blocks(values.shape, kind, values.size),
                gguf.GGMLQuantizationType[kind.upper()])
    qtype = gguf.GGMLQuantizationType[_K_FALLBACK.get(kind, kind.upper())]
    if values.shape[1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        return None, None
    return gguf.quants.quantize(values, qtype), qtype


def write_t5_gguf(model: Any, path: Path, kind: str) -> dict[str, np.ndarray]:
    """`model`'s encoder as llama.cpp's converter writes it (architecture "t5encoder"):
    with `kind` "q8_0", "q4_k" (or another type gguf-py quantizes) every matrix whose rows are
    whole blocks (`_blocks`), the token embedding too, other matrices F16 and 1-D tensors
    F32; with "f16" every matrix F16."""
    import gguf

    writer = gguf.GGUFWriter(path, arch="t5encoder")
    held = {}
    for name, tensor in model.state_dict().items():
        if name == "encoder.embed_tokens.weight":
            continue  # transformers' tied copy of shared.weight
        values = tensor.float().numpy()
        blocks, qtype = (None, None) if kind == "f16" or values.ndim == 1 or \
            "relative_attention" in name else _blocks(values, kind)
        if values.ndim == 1:
            writer.add_tensor(llama_cpp_name(name), values)
            held[name] = values
        elif blocks is None:
            writer.add_tensor(llama_cpp_name(name), values.astype(np.float16))
            held[name] = values.astype(np.float16).astype(np.float32)
        else:
            writer.add_tensor(llama_cpp_name(name), blocks, raw_shape=blocks.shape,
                              raw_dtype=qtype)
            held[name] = gguf.quants.dequantize(blocks, qtype).reshape(values.shape)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return held


def scaled_fp8(state: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """(file tensors, held float32 values) of torch `state` as ComfyUI's scaled float8
    files store it: every 2-D weight but embeddings float8_e4m3fn at absmax/448 with its
    float32 `scale_weight`, one `scale_input` of 1, the rest float16, the `scaled_fp8`
    marker; all under `prefix`."""
    import torch

    out: dict[str, Any] = {prefix + "scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    held = {}
    for name, tensor in state.items():
        layer = name.removesuffix(".weight")
        if tensor.ndim == 2 and name.endswith(".weight") and not name.startswith("shared.") \
                and "relative_attention" not in name:
            scale = (tensor.abs().max().float() / 448).reshape(())
            stored = (tensor.float() / scale).to(torch.float8_e4m3fn)
            out[prefix + name] = stored
            out[prefix + layer + ".scale_weight"] = scale
            if not any(key.endswith(".scale_input") for key in out):  # ignored when read
                out[prefix + layer + ".scale_input"] = torch.ones(())
            held[name] = (stored.float() * scale).numpy()
        else:
            out[prefix + name] = tensor.half().contiguous()
            held[name] = tensor.half().float().numpy()
    return out, held


def write_t5_scaled_fp8(model: Any, path: Path) -> dict[str, np.ndarray]:
    """`model` as ComfyUI's t5xxl_fp8_e4m3fn_scaled.safetensors (scaled_fp8)."""
    from safetensors.torch import save_file

    state = {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    out, held = scaled_fp8(state)
    save_file(out, str(path))
    return held
