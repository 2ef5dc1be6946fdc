"""Tiny random LTX-2 prompt parts built in-process (transformers, diffusers, tokenizers): Gemma
3's language model (local and global layers, a small sliding window), diffusers'
LTX2TextConnectors over its stacked hidden states (LTX-2.0's shared projection and split
rotations, or LTX-2.3's per-modality projections with gated attention and, here, interleaved
rotations), and a Gemma-shaped tokenizer."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from sd_tiny import randomized

# three layers, local / global / local as Gemma 3's pattern mixes them; the scores scaled by
# query_pre_attn_scalar (not head_dim); rotary bases small enough that positions visibly turn
GEMMA3_TINY: dict[str, Any] = dict(
    vocab_size=160, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=16,
    sliding_window=24, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                     "full_attention": {"rope_type": "linear", "factor": 4.0,
                                        "rope_theta": 1000.0}},
    pad_token_id=0, eos_token_id=1, bos_token_id=2)

# LTX-2.0's: text_proj_in to caption_channels (Gemma's width), both connectors that wide,
# split rotations (per head) as the LTX-2 folder's connectors/config.json has them
CONNECTORS_TINY: dict[str, Any] = dict(
    caption_channels=32, text_proj_in_factor=4, video_connector_num_attention_heads=4,
    video_connector_attention_head_dim=8, video_connector_num_layers=2,
    video_connector_num_learnable_registers=8, audio_connector_num_attention_heads=2,
    audio_connector_attention_head_dim=16, audio_connector_num_layers=1,
    audio_connector_num_learnable_registers=8, connector_rope_base_seq_len=32,
    rope_theta=100.0, rope_type="split")
# LTX-2.3's: a projection per modality (with biases), gated attention; the interleaved
# rotation (diffusers' default) here, so that both rotations are tested
CONNECTORS_23_TINY: dict[str, Any] = dict(
    CONNECTORS_TINY, video_connector_num_attention_heads=3, video_connector_attention_head_dim=8,
    audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=8,
    per_modality_projections=True, video_hidden_dim=24, audio_hidden_dim=16, proj_bias=True,
    video_gated_attn=True, audio_gated_attn=True, rope_type="interleaved")

WORDS = ("a cat walks on the beach at sunset while waves roll in slowly , "
         "the camera pans left to show a lighthouse and two birds flying over the water .")


@functools.cache
def tiny_gemma3_text(seed: int = 5) -> Any:
    """transformers' Gemma3TextModel of GEMMA3_TINY, random weights; norm weights near 0 (the
    scale is 1 + weight), so no layer's norm doubles the stream."""
    import torch
    import transformers

    model = randomized(transformers.Gemma3TextModel(transformers.Gemma3TextConfig(
        **GEMMA3_TINY)), seed, scale=0.3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.sub_(1.0)
    return model.eval()


def tiny_gemma3_folder(folder: Path, seed: int = 5) -> Path:
    """transformers' Gemma3ForConditionalGeneration (GEMMA3_TINY's language model holding
    tiny_gemma3_text's weights, a one-layer SigLIP tower no prompt uses) saved in `folder`
    as LTX-2's text_encoder/."""
    import transformers

    vision = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                  num_attention_heads=2, image_size=28, patch_size=14)
    config = transformers.Gemma3Config(text_config=GEMMA3_TINY, vision_config=vision,
                                       mm_tokens_per_image=4)
    model = transformers.Gemma3ForConditionalGeneration(config).eval()
    model.model.language_model.load_state_dict(tiny_gemma3_text(seed).state_dict())
    model.save_pretrained(folder)
    return folder


@functools.cache
def tiny_connectors(per_modality: bool = False, seed: int = 6) -> Any:
    """diffusers' LTX2TextConnectors of CONNECTORS_TINY (LTX-2.0) or CONNECTORS_23_TINY
    (`per_modality`: LTX-2.3), random weights; learnable registers in [-1, 1) as diffusers
    draws them."""
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors

    config = CONNECTORS_23_TINY if per_modality else CONNECTORS_TINY
    return randomized(LTX2TextConnectors(**config), seed, scale=0.5)


def tiny_gemma_tokenizer(folder: Path) -> Path:
    """A Gemma-shaped tokenizer.json in `folder`: <pad>, <eos>, <bos>, <unk> as ids 0-3, a
    BPE over WORDS with spaces as "▁" (a word a token or two), <bos> put before each prompt by
    the post-processor; and its tokenizer_config.json (pad <pad>, left padding)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer

    special = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    tokenizer.train_from_iterator([WORDS] * 10, BpeTrainer(
        vocab_size=GEMMA3_TINY["vocab_size"], special_tokens=special))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 2)])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>",
        "padding_side": "left", "model_max_length": 1024, "tokenizer_class": "GemmaTokenizer"}))
    return folder
