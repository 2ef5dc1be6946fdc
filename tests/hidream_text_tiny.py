"""Tiny random HiDream-I1 text parts built in-process (transformers, tokenizers), in the widths
hidream_tiny's transformer reads: two CLIPs with projection (8 each: pooled 16; 128 positions,
as Long-CLIP's 248 hold the pipeline's 128 tokens), a T5 24 wide with flow_tiny's tokenizer, a
LlamaForCausalLM 20 wide of 3 layers with Llama 3.1's rope (hunyuan_video_tiny's LLAMA3_ROPE)
and hunyuan_video_text_tiny's Llama 3 shaped tokenizer (no pad token of its own in the
config: the pipeline pads with its end token)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flow_tiny import T5_TINY, tiny_t5_tokenizer
from hunyuan_video_text_tiny import tiny_llama_tokenizer
from hunyuan_video_tiny import LLAMA3_ROPE, LLAMA_TINY
from sd_tiny import CLIP_TINY, randomized, write_tokenizer

# caption_channels [24, 20] and text_emb_dim 16 of hidream_tiny.HIDREAM_TINY; 3 Llama layers
LLAMA_HIDREAM: dict[str, Any] = dict(
    LLAMA_TINY, hidden_size=20, num_attention_heads=2, num_key_value_heads=1,
    num_hidden_layers=3, rope_parameters=LLAMA3_ROPE)


def _clip(seed: int) -> Any:
    import transformers

    config = transformers.CLIPTextConfig(**{**CLIP_TINY, "max_position_embeddings": 128},
                                         projection_dim=8)
    return randomized(transformers.CLIPTextModelWithProjection(config), seed)


def tiny_hidream_text(root: Path) -> dict[str, Any]:
    """HiDreamImagePipeline's text parts by diffusers' names (their tokenizers' files under
    `root`: clip-tokenizer/, t5-tokenizer/, llama-tokenizer/)."""
    import transformers

    write_tokenizer(root / "clip-tokenizer")
    tiny_t5_tokenizer(root / "t5-tokenizer")

    def clip_tokenizer() -> Any:
        folder = root / "clip-tokenizer"
        return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                          model_max_length=77)

    llama_tokenizer = tiny_llama_tokenizer(root / "llama-tokenizer")
    # Llama 3.1 Instruct's tokenizer_config.json names no pad token
    config_file = root / "llama-tokenizer" / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("pad_token")
    config_file.write_text(json.dumps(config))
    llama = randomized(transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA_HIDREAM)),
                       43, scale=0.6)
    t5 = randomized(transformers.T5EncoderModel(transformers.T5Config(
        **{**T5_TINY, "d_model": 24})), 6)
    return dict(text_encoder=_clip(3), tokenizer=clip_tokenizer(), text_encoder_2=_clip(4),
                tokenizer_2=clip_tokenizer(), text_encoder_3=t5,
                tokenizer_3=transformers.T5TokenizerFast(
                    tokenizer_file=str(root / "t5-tokenizer" / "tokenizer.json")),
                text_encoder_4=llama, tokenizer_4=llama_tokenizer)
