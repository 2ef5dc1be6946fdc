"""Tiny random HunyuanVideo text parts built in-process (transformers, tokenizers): a Llama 3
shaped tokenizer (byte-level BPE over flow_tiny's CORPUS, Llama 3's chat tokens special,
<|begin_of_text|> put first by its post-processor, <|end_of_text|> the padding) that holds
the words of HunyuanVideo's prompt template as whole tokens, so that the template's part
before the prompt splits into about the 95 tokens the pipeline drops (as Llama 3's real
tokenizer splits it: the prompt itself is kept), hunyuan_video_tiny's LlamaModel (its
vocabulary the tokenizer's size) and sd_tiny's CLIP with its tokenizer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from flow_tiny import CORPUS
from hunyuan_video_tiny import LLAMA_TINY, tiny_llama
from sd_tiny import tiny_text_encoder, write_tokenizer

SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
           "<|eot_id|>"]


def template_words(template: str | None = None) -> list[str]:
    """The template's words (with the space before them) and numbered points, each once;
    `template`: another than text to video's (image to video's)."""
    from diffusion.models.hunyuan_video_prompt import PROMPT_TEMPLATE

    text = re.sub(r"<\|[a-z_]+\|>", " ", (template or PROMPT_TEMPLATE).replace("{}", " "))
    return list(dict.fromkeys(re.findall(r" ?[A-Za-z]+", text)))


def tiny_llama_tokenizer(folder: Path, template: str | None = None,
                         special: tuple[str, ...] = ()) -> Any:
    """The tokenizer.json and tokenizer_config.json in `folder`, and transformers' tokenizer
    of them (the pipeline's `tokenizer`); `template`: the one whose words are whole tokens
    (template_words'), `special`: more special tokens after Llama 3's."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer

    words = template_words(template)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(CORPUS * 10, BpeTrainer(
        vocab_size=LLAMA_TINY["vocab_size"] - len(SPECIAL) - len(special) - len(words),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.add_tokens(words)
    tokenizer.add_special_tokens([*SPECIAL, *special])
    bos = SPECIAL[0]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
        special_tokens=[(bos, tokenizer.token_to_id(bos))])
    assert tokenizer.get_vocab_size() <= LLAMA_TINY["vocab_size"]
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": bos, "eos_token": "<|eot_id|>", "pad_token": "<|end_of_text|>",
        "model_max_length": 1024, "tokenizer_class": "PreTrainedTokenizerFast"}))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), bos_token=bos, eos_token="<|eot_id|>",
        pad_token="<|end_of_text|>", model_max_length=1024)


def tiny_hunyuan_video_text(root: Path) -> dict[str, Any]:
    """The pipeline's text parts by diffusers' names (their tokenizers' files under `root`:
    llama-tokenizer/, clip-tokenizer/)."""
    import transformers

    write_tokenizer(root / "clip-tokenizer")
    clip_tokenizer = transformers.CLIPTokenizer(str(root / "clip-tokenizer" / "vocab.json"),
                                                str(root / "clip-tokenizer" / "merges.txt"),
                                                model_max_length=77)
    return dict(text_encoder=tiny_llama(), tokenizer=tiny_llama_tokenizer(
        root / "llama-tokenizer"), text_encoder_2=tiny_text_encoder(), tokenizer_2=clip_tokenizer)
