"""T5 and UMT5 encoders in transformers' T5EncoderModel names (a file's own, or llama.cpp's
mapped by t5_gguf), as FLUX, SD3, Chroma (T5-XXL) and Wan (UMT5-XXL) read them from single
files: the tensor that marks one, the tensors our encoder takes, and the config its shapes
imply.

    refs = t5_encoder_refs(tensors_of_the_file)
    ComponentWeights("text_encoder", t5_config(refs), refs)
"""

from __future__ import annotations

from typing import Any

from ..weights import TensorRef

__all__ = ["T5_MARK", "T5_PARTS", "t5_config", "t5_encoder_refs"]

T5_MARK = "encoder.block.0.layer.0.SelfAttention.q.weight"
# the tensors of our encoder (the rest of a file: its decoder, the tied embed_tokens copy)
T5_PARTS = ("shared.", "encoder.block.", "encoder.final_layer_norm.")


def t5_encoder_refs(refs: dict[str, TensorRef]) -> dict[str, TensorRef]:
    """Our T5 encoder's tensors of `refs` (a file's tied `encoder.embed_tokens` copy stands
    in for `shared.weight` where that is missing); `refs` itself is left as it is."""
    if "shared.weight" not in refs and "encoder.embed_tokens.weight" in refs:
        refs = {**refs, "shared.weight": refs["encoder.embed_tokens.weight"]}
    return {key: ref for key, ref in refs.items() if key.startswith(T5_PARTS)}


def t5_config(refs: dict[str, TensorRef]) -> dict[str, Any]:
    """T5 v1.1's or UMT5's config from its shapes (relative positions reach 128, as every
    T5's); the same fields for both (UMT5's per-block position bias tables are its model's,
    models.t5). transformers: the checkpoint's `T5Config` / `UMT5Config`."""
    buckets, heads = refs["encoder.block.0.layer.0.SelfAttention.relative_attention_bias"
                          ".weight"].shape
    vocab, d_model = refs["shared.weight"].shape
    layers = 1 + max(int(k.split(".")[2]) for k in refs if k.startswith("encoder.block."))
    return {"vocab_size": vocab, "d_model": d_model, "num_layers": layers, "num_heads": heads,
            "d_kv": refs[T5_MARK].shape[0] // heads,
            "d_ff": refs["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0],
            "relative_attention_num_buckets": buckets, "relative_attention_max_distance": 128,
            "feed_forward_proj": "gated-gelu", "layer_norm_epsilon": 1e-6}
