"""Tiny random Kandinsky 5 text parts built in-process (transformers, diffusers, tokenizers):
zimage_tiny's Qwen-shaped tokenizer with the words of Kandinsky 5's template added as whole
tokens, so that the template's prefix splits as Qwen2.5-VL's real tokenizer splits it (40
tokens, which Kandinsky5T2IPipeline drops), a Qwen2VLProcessor over it, and diffusers'
Kandinsky5T2IPipeline holding qwenimage_tiny's Qwen2.5-VL and sd_tiny's CLIP (the parts
that encode prompts; a whole tiny folder with a transformer and a VAE besides); and the
editing model's Kandinsky5I2IPipeline, whose Qwen2.5-VL reads the picture too (qwenedit_tiny's
vision tower and processor) and whose transformer takes the picture's latents
(`visual_cond`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qwenimage_tiny import tiny_qwen25vl
from sd_tiny import VAE_TINY, randomized, tiny_text_encoder, write_tokenizer
from zimage_tiny import tiny_qwen_tokenizer_with

# Qwen's BPE holds each of these as one token; the tiny one, 300 tokens in all, cannot learn
# them, so they are added tokens (matched longest first: " texture" before " text")
TEMPLATE_WORDS = ["system", "user", "You", " are", " a", " prompt", " engineer", " Describe",
                  " the", " image", " by", " detailing", " color", " shape", " size",
                  " texture", " quantity", " text", " spatial", " relationships", " of",
                  " objects", " and", " background"]
def tiny_kandinsky5_tokenizer(folder: Path, words: list[str] = TEMPLATE_WORDS) -> Path:
    """tiny_qwen_tokenizer's with `words` (TEMPLATE_WORDS unless given) after its own, in
    `folder`."""
    return tiny_qwen_tokenizer_with(folder, words)


def tiny_qwen2vl_processor(folder: Path) -> Any:
    """transformers' Qwen2VLProcessor (the pipeline's `tokenizer`) of the tokenizer in `folder`,
    without the image and video processors no prompt uses (the video one needs torchvision,
    which the references do without)."""
    import transformers

    class Processor(transformers.Qwen2VLProcessor):  # type: ignore[misc]
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), pad_token="<|endoftext|>",
        eos_token="<|im_end|>", model_max_length=32768)
    return Processor(image_processor=None, tokenizer=tokenizer, video_processor=None)


def tiny_kandinsky5_text_pipeline(root: Path, words: list[str] = TEMPLATE_WORDS,
                                  **parts: Any) -> Any:
    """diffusers' Kandinsky5T2IPipeline of the tiny text encoders and tokenizers (their files
    under `root`: qwen-tokenizer/, clip-tokenizer/; the Qwen tokenizer's added `words`),
    `parts` (transformer, vae, scheduler) None unless given."""
    import diffusers
    import transformers

    processor = tiny_qwen2vl_processor(tiny_kandinsky5_tokenizer(root / "qwen-tokenizer",
                                                                 words))
    write_tokenizer(root / "clip-tokenizer")
    clip_tokenizer = transformers.CLIPTokenizer(str(root / "clip-tokenizer" / "vocab.json"),
                                                str(root / "clip-tokenizer" / "merges.txt"),
                                                model_max_length=77)
    return diffusers.Kandinsky5T2IPipeline(
        **{"transformer": None, "vae": None, "scheduler": None, **parts},
        text_encoder=tiny_qwen25vl(), tokenizer=processor, text_encoder_2=tiny_text_encoder(),
        tokenizer_2=clip_tokenizer)


def tiny_kandinsky5_vae() -> Any:
    """sd_tiny's 4-channel VAE with FLUX's scaling and shift (diffusers' AutoencoderKL)."""
    import diffusers

    return randomized(diffusers.AutoencoderKL(
        **VAE_TINY, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611,
        shift_factor=0.1159), 2)


def _name_processor(folder: Path) -> None:
    """model_index.json's tokenizer named as diffusers writes it for the real folders."""
    index = json.loads((folder / "model_index.json").read_text())
    index["tokenizer"] = ["transformers", "Qwen2VLProcessor"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def tiny_kandinsky5_pipeline(root: Path) -> Any:
    """A whole tiny Kandinsky5T2IPipeline (kandinsky5_tiny's transformer, sd_tiny's 4-channel
    VAE with FLUX's scaling and shift, the text parts, shift 3) saved to `root / "kandinsky5"`,
    its model_index.json naming the tokenizer as diffusers writes it for the real one; returns
    the pipeline."""
    import diffusers
    from kandinsky5_tiny import tiny_kandinsky5_transformer

    pipe = tiny_kandinsky5_text_pipeline(
        root, transformer=tiny_kandinsky5_transformer(), vae=tiny_kandinsky5_vae(),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0))
    # the processor's own save needs its image and video processors: its tokenizer's files
    pipe.register_modules(tokenizer=pipe.tokenizer.tokenizer)
    folder = root / "kandinsky5"
    pipe.save_pretrained(folder)
    _name_processor(folder)
    return pipe


def tiny_kandinsky5_edit_pipeline(root: Path) -> Any:
    """A whole tiny Kandinsky5I2IPipeline saved to `root / "kandinsky5-edit"`: the transformer
    with `visual_cond` (the picture's latents and a mask channel beside the noise), scaled so
    that the picture visibly matters; qwenedit_tiny's Qwen2.5-VL with its vision tower and
    processor (whose image processor's settings the folder's tokenizer/ keeps); the rest as
    tiny_kandinsky5_pipeline's. Returns the pipeline."""
    import diffusers
    import transformers
    from kandinsky5_tiny import tiny_kandinsky5_transformer
    from qwenedit_tiny import tiny_vision_text_encoder

    encoder, processor = tiny_vision_text_encoder(root)
    write_tokenizer(root / "clip-tokenizer")
    clip_tokenizer = transformers.CLIPTokenizer(str(root / "clip-tokenizer" / "vocab.json"),
                                                str(root / "clip-tokenizer" / "merges.txt"),
                                                model_max_length=77)
    import torch

    transformer = tiny_kandinsky5_transformer(visual_cond=True)
    # each patch's features are (frame, row, column, channel) flattened, channel last: the
    # noise's 4, the picture's 4, the ones; the picture's weights scaled up, so that it shows
    weight = transformer.visual_embeddings.in_layer.weight
    picture = torch.arange(weight.shape[1]) % 9
    with torch.no_grad():
        weight[:, (picture >= 4) & (picture < 8)] *= 4
    pipe = diffusers.Kandinsky5I2IPipeline(
        transformer=transformer, vae=tiny_kandinsky5_vae(),
        text_encoder=encoder, tokenizer=processor, text_encoder_2=tiny_text_encoder(),
        tokenizer_2=clip_tokenizer, scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0))
    folder = root / "kandinsky5-edit"
    pipe.save_pretrained(folder)
    _name_processor(folder)
    return pipe


def tiny_kandinsky5_folder(root: Path) -> Path:
    """tiny_kandinsky5_pipeline's folder, `root / "kandinsky5"`."""
    tiny_kandinsky5_pipeline(root)
    return root / "kandinsky5"
