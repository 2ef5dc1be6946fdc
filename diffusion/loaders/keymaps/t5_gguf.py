"""T5 encoders as GGUF files: city96's `t5-v1_1-xxl-encoder-Q8_0.gguf`, `-Q5_K_M.gguf`,
`-f16.gguf`, ... (llama.cpp's converter, architecture "t5encoder"), the FLUX / SD3.5 text
encoder of small GPUs, named by `--text-encoder` like `t5xxl_fp16.safetensors`.

llama.cpp names the tensors its own way (gguf-py's constants, MODEL_ARCH.T5ENCODER); they are
mapped to transformers' T5EncoderModel names, as ComfyUI-GGUF's T5_SD_MAP does:

    token_embd.weight                 shared.weight
    enc.blk.N.attn_norm.weight        encoder.block.N.layer.0.layer_norm.weight
    enc.blk.N.attn_{q,k,v,o}.weight   encoder.block.N.layer.0.SelfAttention.{q,k,v,o}.weight
    enc.blk.0.attn_rel_b.weight       encoder.block.0.layer.0.SelfAttention
                                      .relative_attention_bias.weight
    enc.blk.N.ffn_norm.weight         encoder.block.N.layer.1.layer_norm.weight
    enc.blk.N.ffn_{gate,up,down}.weight
                                      encoder.block.N.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight
    enc.output_norm.weight            encoder.final_layer_norm.weight

A whole T5's GGUF (architecture "t5") holds the same encoder beside its decoder (`dec.*`,
`output.weight`), which is left out. The matrices stay quantized on the GPU where gpustd keeps
their type (diffusion.loaders.component); the tokenizer in the file's metadata is not
used (the bundled T5 v1.1 tokenizer is the same).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import WeightsError
from ..formats.gguf_file import QUANTIZED, GGUFFile, import_gguf
from ..weights import TensorRef

__all__ = ["T5_GGUF_MARK", "gguf_kind", "t5_gguf_refs"]

T5_GGUF_MARK = "enc.blk.0.attn_q.weight"
_TOP = {"token_embd.weight": "shared.weight",
        "enc.output_norm.weight": "encoder.final_layer_norm.weight"}
_BLOCK = re.compile(r"enc\.blk\.(\d+)\.(\w+)\.weight")
_LAYERS = {
    "attn_norm": "layer.0.layer_norm", "attn_q": "layer.0.SelfAttention.q",
    "attn_k": "layer.0.SelfAttention.k", "attn_v": "layer.0.SelfAttention.v",
    "attn_o": "layer.0.SelfAttention.o",
    "attn_rel_b": "layer.0.SelfAttention.relative_attention_bias",
    "ffn_norm": "layer.1.layer_norm", "ffn_gate": "layer.1.DenseReluDense.wi_0",
    "ffn_up": "layer.1.DenseReluDense.wi_1", "ffn_down": "layer.1.DenseReluDense.wo",
}
_INSTEAD = ("--text-encoder takes a T5 encoder GGUF (city96's t5-v1_1-xxl-encoder-Q8_0.gguf "
            "and its other quantizations) or t5xxl / clip_l / clip_g .safetensors files")
# what other GGUFs people have beside them are, and where they go instead
_OTHER = {"flux": "a FLUX transformer: give it as the model (or transformer_file)",
          "sd3": "an SD3 transformer: give it as the model (or transformer_file)",
          "sd1": "a Stable Diffusion UNet: give it as the model",
          "sdxl": "an SDXL UNet: give it as the model"}


def _name(key: str) -> str | None:
    """transformers' name of llama.cpp's T5 tensor `key`; None for one it does not know."""
    if key in _TOP:
        return _TOP[key]
    found = _BLOCK.fullmatch(key)
    if found is None or found.group(2) not in _LAYERS:
        return None
    return f"encoder.block.{found.group(1)}.{_LAYERS[found.group(2)]}.weight"


def _check_formats(file: GGUFFile) -> None:
    """WeightsError naming the first tensor whose stored type neither the GPU keeps nor gguf
    dequantizes (one block of each type is tried)."""
    gguf = import_gguf()
    tried: set[str] = set()
    for key in file.keys():
        kind = file.format(key)
        if kind in tried or kind in ("f32", "f16") or kind in QUANTIZED:
            continue
        qtype = gguf.GGMLQuantizationType[kind.upper()]
        nbytes = gguf.GGML_QUANT_SIZES[qtype][1]
        try:
            gguf.quants.dequantize(file.raw(key)[:nbytes], qtype)
        except NotImplementedError:
            raise WeightsError(
                f"{file.path}: a T5 encoder GGUF whose tensor {key!r} is stored as {kind}, a "
                f"type that neither the GPU keeps ({', '.join(QUANTIZED)}) nor the gguf "
                "package dequantizes; use "
                "city96's Q8_0, Q5_K_M or F16 file, or t5xxl_fp16.safetensors") from None
        tried.add(kind)


def gguf_kind(path: str | os.PathLike[str]) -> str:
    """What a GGUF file holds, in words, for a message that sends it where it belongs."""
    file = GGUFFile(Path(path))
    if T5_GGUF_MARK in file:
        return ("a T5 text encoder, which goes beside a FLUX / SD3 model with --text-encoder "
                "(text_encoder_files=)")
    return _OTHER.get(file.architecture) or (
        f"a GGUF of architecture {file.architecture!r}" if file.architecture else "a GGUF")


def t5_gguf_refs(path: str | os.PathLike[str]) -> dict[str, TensorRef]:
    """transformers' T5EncoderModel name -> tensor of the T5 encoder GGUF `path` (module
    docstring). WeightsError saying what the file is and what to pass instead when it is not
    a T5 encoder, holds a tensor no T5 encoder has, or a type that cannot be read."""
    file = GGUFFile(Path(path))
    if T5_GGUF_MARK not in file:
        raise WeightsError(f"{file.path}: not a T5 encoder ({gguf_kind(path)}; no "
                           f"{T5_GGUF_MARK!r}); {_INSTEAD}")
    refs: dict[str, TensorRef] = {}
    for key in file.keys():
        if key.startswith("dec.") or key == "output.weight":
            continue  # a whole T5's decoder
        name = _name(key)
        if name is None:
            raise WeightsError(f"{file.path}: tensor {key!r} is not one of a T5 encoder's "
                               f"(llama.cpp's names: token_embd, enc.blk.N.attn_q, ...); "
                               f"{_INSTEAD}")
        refs[name] = TensorRef(file, key, file.shape(key))
    _check_formats(file)
    return refs

