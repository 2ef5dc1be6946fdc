"""Tiny random NVIDIA Cosmos components built in-process (diffusers, transformers): the
Predict2 / Predict2.5 transformer (diffusers' CosmosTransformer3DModel: the padding-mask
channel, no learnable positions; 2.5's condition-mask channel and text projection) and a
whole Cosmos2TextToImagePipeline folder (tiny T5, tiny Wan VAE, flow Euler on EDM sigmas)
and a Cosmos2_5_PredictBasePipeline one (tiny Qwen2.5-VL, UniPC on Karras flow sigmas).

diffusers resizes the pipelines' all-zero padding mask with torchvision, which this venv does
not carry: `install_resize` gives the reference torch's nearest resize in its place (the
same zeros)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from sd_tiny import randomized

# Predict2's layout (Text2Image: 16 -> 4 latent channels here; RoPE scaled by (1, 4, 4)),
# heads of 12 features: 4 frame, 4 row and 4 column rotary features
COSMOS_TINY: dict[str, Any] = dict(
    in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=2,
    mlp_ratio=4.0, text_embed_dim=32, adaln_lora_dim=8, max_size=(16, 32, 32),
    patch_size=(1, 2, 2), rope_scale=(1.0, 4.0, 4.0), concat_padding_mask=True,
    extra_pos_embed_type=None)
SCALE = 0.3  # `randomized`'s weight scale
# Predict2.5's: the condition-mask channel in, a GELU projection of the text states (the
# tiny Qwen2.5-VL's 3 layers of 40 features side by side)
COSMOS25_TINY: dict[str, Any] = {
    **COSMOS_TINY, "in_channels": 5, "rope_scale": (1.0, 3.0, 3.0),
    "use_crossattn_projection": True, "crossattn_proj_in_channels": 120,
    "encoder_hidden_states_channels": 32}


def _resize(image: Any, size: list[int], interpolation: Any = None) -> Any:
    """torchvision's tensor resize with NEAREST: torch's nearest interpolation."""
    import torch

    return torch.nn.functional.interpolate(image, size=size, mode="nearest")


def install_resize() -> None:
    """Give diffusers' Cosmos transformer a `transforms` (torchvision's name) whose resize is
    torch's nearest interpolation, where torchvision is absent."""
    from diffusers.models.transformers import transformer_cosmos

    if not hasattr(transformer_cosmos, "transforms"):
        transformer_cosmos.transforms = types.SimpleNamespace(  # type: ignore[attr-defined]
            functional=types.SimpleNamespace(resize=_resize),
            InterpolationMode=types.SimpleNamespace(NEAREST="nearest"))


def tiny_cosmos_transformer(seed: int = 7, **overrides: Any) -> Any:
    """diffusers' CosmosTransformer3DModel of COSMOS_TINY (and `overrides`), random weights
    scaled so that the text and the conditioning frames visibly matter."""
    import diffusers
    import torch

    install_resize()
    model = randomized(diffusers.CosmosTransformer3DModel(**{**COSMOS_TINY, **overrides}),
                       seed, scale=SCALE)
    # the adaLN-LoRA matrices (norm1.linear_1, ...) are named like norms, which `randomized`
    # sets near 1: drawn as the other matrices instead
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * (SCALE * 5 / p.shape[1] ** 0.5))
    return model


class PassingGuardrail:
    """Stands in for cosmos_guardrail's CosmosSafetyChecker (a separate download): every
    prompt safe, every video returned as given (diffusers refuses to run without one)."""

    def to(self, *args: Any, **kwargs: Any) -> PassingGuardrail:
        return self

    def check_text_safety(self, prompt: str) -> bool:
        return True

    def check_video_safety(self, video: Any) -> Any:
        return video


def tiny_cosmos2_t2i_pipeline(root: Path, name: str = "cosmos2-t2i") -> Any:
    """diffusers' Cosmos2TextToImagePipeline of tiny random parts (flow_tiny's T5 and
    tokenizer, wan_tiny's VAE, COSMOS_TINY, Predict2's scheduler: flow Euler over Karras
    sigmas) saved to `root / name`; returns it with PassingGuardrail as its safety checker."""
    import diffusers
    import transformers
    from flow_tiny import tiny_t5, tiny_t5_tokenizer
    from wan_tiny import tiny_wan_vae

    tiny_t5_tokenizer(root / "t5-tokenizer")
    tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / "t5-tokenizer" / "tokenizer.json"))
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True)
    pipe = diffusers.Cosmos2TextToImagePipeline(
        text_encoder=tiny_t5(), tokenizer=tokenizer, transformer=tiny_cosmos_transformer(),
        vae=tiny_wan_vae(), scheduler=scheduler, safety_checker=PassingGuardrail())
    pipe.save_pretrained(root / name)
    return pipe


def tiny_cosmos2_v2w_pipeline(root: Path, name: str = "cosmos2-v2w") -> Any:
    """diffusers' Cosmos2VideoToWorldPipeline of tiny_cosmos2_t2i_pipeline's parts with the
    condition-mask channel in (the transformer's in_channels 5) saved to `root / name`."""
    import diffusers
    import transformers
    from flow_tiny import tiny_t5, tiny_t5_tokenizer
    from wan_tiny import tiny_wan_vae

    tiny_t5_tokenizer(root / "t5-tokenizer")
    tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / "t5-tokenizer" / "tokenizer.json"))
    pipe = diffusers.Cosmos2VideoToWorldPipeline(
        text_encoder=tiny_t5(), tokenizer=tokenizer,
        transformer=tiny_cosmos_transformer(in_channels=5), vae=tiny_wan_vae(),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True),
        safety_checker=PassingGuardrail())
    pipe.save_pretrained(root / name)
    return pipe

# Qwen2.5-VL's chat template, the branches a system and a user message of text parts take
QWEN25VL_PARTS_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Predict2.5's scheduler: UniPC on Karras' EDM sigmas read as flow sigmas
COSMOS25_SCHEDULER: dict[str, Any] = dict(
    use_karras_sigmas=True, use_flow_sigmas=True, prediction_type="flow_prediction",
    sigma_max=200.0, sigma_min=0.01)


def tiny_cosmos25_pipeline(root: Path, name: str = "cosmos25") -> Any:
    """diffusers' Cosmos2_5_PredictBasePipeline of tiny random parts (qwenimage_tiny's
    Qwen2.5-VL and zimage_tiny's tokenizer with QWEN25VL_PARTS_TEMPLATE, wan_tiny's VAE,
    COSMOS25_TINY, COSMOS25_SCHEDULER) saved to `root / name`; returns it with
    PassingGuardrail as its safety checker."""
    import json

    import diffusers
    import transformers
    from qwenimage_tiny import tiny_qwen25vl
    from wan_tiny import tiny_wan_vae
    from zimage_tiny import tiny_qwen_tokenizer

    folder = tiny_qwen_tokenizer(root / "qwen-tokenizer")
    config_file = folder / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                       "chat_template": QWEN25VL_PARTS_TEMPLATE}))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), pad_token="<|endoftext|>",
        eos_token="<|im_end|>", chat_template=QWEN25VL_PARTS_TEMPLATE, model_max_length=512)
    pipe = diffusers.Cosmos2_5_PredictBasePipeline(
        text_encoder=tiny_qwen25vl(), tokenizer=tokenizer,
        transformer=tiny_cosmos_transformer(**COSMOS25_TINY), vae=tiny_wan_vae(),
        scheduler=diffusers.UniPCMultistepScheduler(**COSMOS25_SCHEDULER),
        safety_checker=PassingGuardrail())
    pipe.save_pretrained(root / name)
    return pipe
