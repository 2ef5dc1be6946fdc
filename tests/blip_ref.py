"""A tiny random transformers BlipForConditionalGeneration for the BLIP captioner's tests,
written as the WebUI's BLIP file is (Salesforce's key layout in `torch.save({"model": ...})`),
beside a small BERT vocab.txt; and the reference caption from transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

WORDS = ("a picture of the an in on with and red blue green dog cat man woman tree house car "
         "sky field water standing sitting next to large small white black table room city "
         "street people two bird flower grass mountain road window door light dark old new "
         "young girl boy hat shirt dress painting photo drawing close up view front top side "
         "over under near").split()
PIECES = ["##s", "##ed", "##ing", "##er", ",", ".", "'", "!", "?"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
IMAGE_SIZE, PATCH = 64, 16  # a 4x4 grid of patches


def write_vocab(folder: Path) -> Path:
    """BERT's vocab.txt layout (specials first, one token a line), small."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vocab.txt"
    path.write_text("\n".join(SPECIAL + WORDS + PIECES) + "\n", encoding="utf-8")
    return path


def tiny_blip(seed: int = 3) -> Any:
    """transformers' BlipForConditionalGeneration, 2 layers of 128 (2 heads of 64) each side,
    BLIP's LayerNorm eps (1e-6 in the ViT), random weights scaled so the picture and the text
    change the caption."""
    import torch
    import transformers

    vocab = len(SPECIAL) + len(WORDS) + len(PIECES) + 2  # and [DEC], [ENC]
    config = transformers.BlipConfig(
        vision_config={"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": IMAGE_SIZE, "patch_size": PATCH,
                       "layer_norm_eps": 1e-6},
        text_config={"vocab_size": vocab, "hidden_size": 128, "encoder_hidden_size": 128,
                     "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "max_position_embeddings": 64, "bos_token_id": vocab - 2,
                     "sep_token_id": SPECIAL.index("[SEP]"), "pad_token_id": 0})
    model = transformers.BlipForConditionalGeneration(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.ndim >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) * (1.5 / fan_in**0.5))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
        # the embeddings (and the tied LM head) larger: logits far apart, clear argmaxes; the
        # end token ([SEP]) likely enough that some captions end before max_length
        model.text_decoder.bert.embeddings.word_embeddings.weight.mul_(1.5)
        model.text_decoder.cls.predictions.bias[SPECIAL.index("[SEP]")] += 8
    return model.eval()


def _original_key(key: str) -> str:
    """transformers' BLIP name -> Salesforce's (the inverse of transformers'
    convert_blip_original_pytorch_to_hf.py rename_key)."""
    vision = {"vision_model.embeddings.class_embedding": "visual_encoder.cls_token",
              "vision_model.embeddings.position_embedding": "visual_encoder.pos_embed",
              "vision_model.embeddings.patch_embedding": "visual_encoder.patch_embed.proj",
              "vision_model.post_layernorm": "visual_encoder.norm",
              "vision_model.encoder.layers": "visual_encoder.blocks",
              ".layer_norm1": ".norm1", ".layer_norm2": ".norm2",
              ".self_attn.qkv": ".attn.qkv", ".self_attn.projection": ".attn.proj"}
    if key.startswith("vision_model."):
        for old, new in vision.items():
            key = key.replace(old, new)
    return key


def write_blip(folder: Path, model: Any) -> Path:
    """The model as the WebUI's models/BLIP holds it: model_base_caption_capfilt_large.pth
    (`{"model": state dict}` with Salesforce's keys) and vocab.txt."""
    import torch

    write_vocab(folder)
    state = {_original_key(key): value.clone() for key, value in model.state_dict().items()
             if not key.endswith("position_ids")}
    path = folder / "model_base_caption_capfilt_large.pth"
    torch.save({"model": state}, path)
    return path


def reference_pixels(picture: Any, size: int = IMAGE_SIZE) -> Any:
    """transformers' BlipImageProcessor (Pillow backend) at `size` (the tiny model's own)."""
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    processor = BlipImageProcessorPil(size={"height": size, "width": size})
    return processor(picture, return_tensors="pt").pixel_values


def reference_tokenizer(folder: Path) -> Any:
    """BLIP's `init_tokenizer` on the folder's vocab.txt (transformers' BertTokenizer)."""
    import transformers

    tokenizer = transformers.BertTokenizer(str(folder / "vocab.txt"),
                                           clean_up_tokenization_spaces=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]",
                                  "additional_special_tokens": ["[ENC]"]})
    return tokenizer


def reference_caption(model: Any, folder: Path, picture: Any, *, beams: int,
                      min_length: int, max_length: int,
                      size: int = IMAGE_SIZE) -> tuple[list[int], str]:
    """BLIP's `generate` (sample=False) through transformers at picture size `size` (another
    than the model's: its position embeddings interpolated): (token ids, caption)."""
    import torch

    tokenizer = reference_tokenizer(folder)
    prompt = "a picture of "
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(reference_pixels(picture, size), input_ids=ids, num_beams=beams,
                             min_length=min_length, max_length=max_length, do_sample=False,
                             repetition_penalty=1.0, interpolate_pos_encoding=size != IMAGE_SIZE)
    tokens = [int(t) for t in out[0]]
    return tokens, tokenizer.decode(tokens, skip_special_tokens=True)[len(prompt):]
