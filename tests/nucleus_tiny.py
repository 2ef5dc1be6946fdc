"""Tiny random NucleusMoE-Image parts built in-process (diffusers, transformers, tokenizers):
the transformer (a dense block, then mixture-of-experts blocks with expert-choice routing),
Qwen3-VL's whole Qwen3VLForConditionalGeneration 8 layers deep (the pipeline taps
hidden_states[-8]), a Qwen3VLProcessor over a tiny Qwen tokenizer, Qwen-Image's tiny VAE and
the whole NucleusMoEImagePipeline, written as a folder (model_index.json, one folder a
component, the tokenizer in processor/) and kept in memory as diffusers' pipeline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from qwen3vl_tiny import QWEN3VL_TEXT, tiny_qwen3vl_processor, tiny_qwen3vl_tokenizer
from sd_tiny import randomized
from zimage_tiny import QWEN3_TINY

# 4 latent channels (QWENIMAGE_VAE_TINY's) in 2 x 2 patches, in and out; Qwen3-VL's 40-wide
# states; 2 query heads for 1 key/value head, 16 wide = the rotary axes 4 + 6 + 6. Block 0 dense
# (mlp_ratio 8: FeedForward's width int(32 * 8 * 2 / 3) // 128 * 128 = 128), blocks 1 and 2
# mixtures of 4 experts, each expert taking ceil(factor * tokens / 4) tokens of a picture
NUCLEUS_TINY: dict[str, Any] = dict(
    patch_size=2, in_channels=16, out_channels=4, num_layers=3, attention_head_dim=16,
    num_attention_heads=2, num_key_value_heads=1, joint_attention_dim=QWEN3_TINY["hidden_size"],
    axes_dims_rope=(4, 6, 6), mlp_ratio=8.0, dense_moe_strategy="leave_first_block_dense",
    num_experts=4, moe_intermediate_dim=24, capacity_factors=[1.0, 1.5, 2.0], route_scale=2.5)
# the hidden_states the pipeline taps (its default_return_index -8) must exist: 8 layers
TEXT_LAYERS = 8
NUCLEUS_SCHEDULER: dict[str, Any] = dict(
    base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15,
    num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True)
# Qwen3-VL's chat template's branches a text-only conversation takes: a system message of a
# string, user messages of text parts, the assistant's turn opened
NUCLEUS_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}{%- else %}"
    "{%- for content in message.content %}{{- content.text }}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
_INDEX = {"_class_name": "NucleusMoEImagePipeline", "_diffusers_version": "0.42.1",
          "transformer": ["diffusers", "NucleusMoEImageTransformer2DModel"],
          "vae": ["diffusers", "AutoencoderKLQwenImage"],
          "text_encoder": ["transformers", "Qwen3VLForConditionalGeneration"],
          "processor": ["transformers", "Qwen3VLProcessor"],
          "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}


def tiny_nucleus_transformer(seed: int = 17, **overrides: Any) -> Any:
    """diffusers' NucleusMoEImageTransformer2DModel of NUCLEUS_TINY, random weights scaled so
    the text visibly matters and the routers' scores spread (the tests assert both)."""
    import diffusers
    import torch

    model = randomized(diffusers.NucleusMoEImageTransformer2DModel(
        **{**NUCLEUS_TINY, **overrides}), seed, scale=0.4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("img_mlp.gate.weight"):  # 4x sharper routers: distinct choices
                p.mul_(4.0)
        # the flow near the latents' size (it came out ~40 wide), which the VAE amplifies
        model.proj_out.weight.mul_(0.05)
    return model


def tiny_nucleus_text_encoder(seed: int = 3) -> Any:
    """transformers' Qwen3VLForConditionalGeneration with QWEN3VL_TEXT's language model
    TEXT_LAYERS deep and a one-block vision tower no prompt uses, random weights."""
    import transformers

    vision = dict(depth=1, hidden_size=16, intermediate_size=24, num_heads=2,
                  out_hidden_size=QWEN3_TINY["hidden_size"], deepstack_visual_indexes=[0],
                  num_position_embeddings=16)
    config = transformers.Qwen3VLConfig(
        text_config={**QWEN3VL_TEXT, "num_hidden_layers": TEXT_LAYERS}, vision_config=vision,
        image_token_id=QWEN3_TINY["vocab_size"] - 1)
    return randomized(transformers.Qwen3VLForConditionalGeneration(config), seed).eval()


def tiny_nucleus_processor(root: Path) -> tuple[Path, Any]:
    """(the tokenizer's folder, transformers' Qwen3VLProcessor over it with NUCLEUS_TEMPLATE)."""
    tokenizer = tiny_qwen3vl_tokenizer(root / "nucleus-tokenizer")
    processor = tiny_qwen3vl_processor(tokenizer)
    processor.chat_template = NUCLEUS_TEMPLATE
    return tokenizer, processor


def tiny_nucleus_pipeline(root: Path) -> Any:
    """diffusers' NucleusMoEImagePipeline of tiny random parts, written to `root /
    "nucleus-moe"` (model_index.json by hand: the tiny processor has no image processor to
    save; the chat template beside the tokenizer, as Qwen3-VL's folders keep it); returns
    the pipeline."""
    import diffusers
    from qwenimage_tiny import tiny_qwenimage_vae

    tokenizer, processor = tiny_nucleus_processor(root)
    pipe = diffusers.NucleusMoEImagePipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**NUCLEUS_SCHEDULER),
        vae=tiny_qwenimage_vae(), text_encoder=tiny_nucleus_text_encoder(),
        processor=processor, transformer=tiny_nucleus_transformer())
    folder = root / "nucleus-moe"
    for name in ("transformer", "vae", "text_encoder", "scheduler"):
        getattr(pipe, name).save_pretrained(folder / name)
    shutil.copytree(tokenizer, folder / "processor")
    (folder / "processor" / "chat_template.jinja").write_text(NUCLEUS_TEMPLATE)
    (folder / "model_index.json").write_text(json.dumps(_INDEX))
    return pipe
