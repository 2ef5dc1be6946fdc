"""Tiny random FLUX.2 dev parts built in-process (transformers, diffusers, tokenizers): a
Mistral3ForConditionalGeneration (a Mistral text model 40 wide with the 31 layers FLUX.2 dev
reads from, a Pixtral vision tower the pipeline never runs), a Mistral-shaped tokenizer with
Mistral Small 3.1's chat template, and a whole Flux2Pipeline folder with the distilled
guidance embedding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flow_tiny import CORPUS
from flux2_tiny import tiny_flux2_transformer, tiny_flux2_vae
from sd_tiny import randomized

MISTRAL_TINY: dict[str, Any] = dict(
    vocab_size=300, hidden_size=40, intermediate_size=56, num_hidden_layers=31,
    num_attention_heads=4, num_key_value_heads=2, head_dim=12, rms_norm_eps=1e-5,
    max_position_embeddings=1024, rope_theta=1_000_000_000.0, sliding_window=None,
    tie_word_embeddings=False)
MISTRAL_SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]",
                   "[/SYSTEM_PROMPT]", "[IMG]"]
# Mistral Small 3.1's chat template, the branches a system message and user turns of text
# (or images) take
MISTRAL_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}"
    "{{- '[SYSTEM_PROMPT]' + message['content'][0]['text'] + '[/SYSTEM_PROMPT]' }}"
    "{%- elif message['role'] == 'user' %}{{- '[INST]' }}"
    "{%- for block in message['content'] %}"
    "{%- if block['type'] == 'text' %}{{- block['text'] }}{%- else %}{{- '[IMG]' }}{%- endif %}"
    "{%- endfor %}{{- '[/INST]' }}"
    "{%- endif %}"
    "{%- endfor %}")


def tiny_mistral_tokenizer(folder: Path) -> Path:
    """A Mistral-shaped tokenizer.json (byte-level BPE over CORPUS, Mistral's control tokens
    first, <pad> the padding) and its tokenizer_config.json in `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(CORPUS * 10, BpeTrainer(
        vocab_size=MISTRAL_TINY["vocab_size"], special_tokens=MISTRAL_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>",
        "model_max_length": 1024, "chat_template": MISTRAL_TEMPLATE,
        "tokenizer_class": "PreTrainedTokenizerFast"}))
    return folder


def mistral_transformers_tokenizer(folder: Path) -> Any:
    import transformers

    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), pad_token="<pad>", bos_token="<s>",
        eos_token="</s>", chat_template=MISTRAL_TEMPLATE, model_max_length=1024)


def tiny_mistral3(seed: int = 3) -> Any:
    """A tiny Mistral3ForConditionalGeneration of random weights, scaled so that the
    prompt's few tokens after FLUX.2's long system message visibly change the picture."""
    import transformers

    config = transformers.Mistral3Config(
        text_config=transformers.MistralConfig(**MISTRAL_TINY),
        vision_config=transformers.PixtralVisionConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            image_size=32, patch_size=8, head_dim=8),
        image_token_index=MISTRAL_SPECIAL.index("[IMG]"), spatial_merge_size=2)
    return randomized(transformers.Mistral3ForConditionalGeneration(config), seed,
                      scale=0.6).eval()


def tiny_flux2_dev_pipeline(root: Path) -> Any:
    """diffusers' Flux2Pipeline of tiny random parts (the guidance embedding on), saved to
    `root / "flux2-dev"`; returns the pipeline."""
    import diffusers

    tokenizer = mistral_transformers_tokenizer(tiny_mistral_tokenizer(root / "mistral-tok"))
    transformer = tiny_flux2_transformer(config={"guidance_embeds": True})
    pipe = diffusers.Flux2Pipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
        vae=tiny_flux2_vae(), text_encoder=tiny_mistral3(), tokenizer=tokenizer,
        transformer=transformer)
    pipe.save_pretrained(root / "flux2-dev")
    return pipe
