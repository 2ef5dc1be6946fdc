"""Tiny random HunyuanVideo 1.5 text parts built in-process (transformers, tokenizers):
zimage_tiny's Qwen-shaped tokenizer with Qwen2.5-VL's chat template (the branches a system
message and a user's string take), a Qwen2_5_VLTextModel of QWEN3_TINY's sizes (the
pipeline's `text_encoder`) and hunyuanimage_parts_tiny's ByT5. The tiny tokenizer splits the
system message into more than the 108 tokens the pipeline drops, so the whole prompt and the
chat's tail are kept, as with Qwen's real tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sd_tiny import randomized
from zimage_tiny import QWEN3_TINY, tiny_qwen_tokenizer

# Qwen2.5-VL's chat template, its branches for string contents (pictures and videos left out)
QWEN25VL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_video_tokenizer(folder: Path) -> Any:
    """tiny_qwen_tokenizer's files in `folder` with QWEN25VL_TEMPLATE as their chat template,
    and transformers' tokenizer of them (the pipeline's `tokenizer`)."""
    import transformers

    tiny_qwen_tokenizer(folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "chat_template": QWEN25VL_TEMPLATE}))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), pad_token="<|endoftext|>",
        eos_token="<|im_end|>", chat_template=QWEN25VL_TEMPLATE, model_max_length=2048)


def tiny_qwen25vl_text(seed: int = 3) -> Any:
    """transformers' Qwen2_5_VLTextModel of QWEN3_TINY's sizes (Qwen2's layers: no q/k
    norms), random; positions past 1024 are not needed (the chats are ~400 tokens)."""
    import transformers

    text = {k: v for k, v in QWEN3_TINY.items() if k not in ("head_dim", "tie_word_embeddings")}
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6,
                               "mrope_section": [1, 2, 2]}
    return randomized(transformers.Qwen2_5_VLTextModel(
        transformers.Qwen2_5_VLTextConfig(**text)), seed)
