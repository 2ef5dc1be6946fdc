"""Tiny random ERNIE-Image parts built in-process (diffusers, transformers, tokenizers): an
ErnieImageTransformer2DModel, a Mistral3Model text encoder (a Mistral text model 40 wide, a
Pixtral vision tower the pipeline never runs), a Mistral-shaped tokenizer that puts <s>
first, FLUX.2's VAE, and a whole ErnieImagePipeline folder (no prompt enhancer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flux2_dev_tiny import MISTRAL_SPECIAL, MISTRAL_TINY, tiny_mistral_tokenizer
from flux2_tiny import tiny_flux2_vae

# the Mistral the transformer reads (hidden_states[-2]: after its second layer of three), its
# rotation ERNIE-Image's YaRN (the released text_config's, its context 4 x 256 here)
ERNIE_MISTRAL_TINY: dict[str, Any] = {
    **MISTRAL_TINY, "num_hidden_layers": 3, "rope_parameters": {
        "rope_type": "yarn", "rope_theta": 1_000_000.0, "factor": 4.0,
        "original_max_position_embeddings": 256, "beta_fast": 32.0, "beta_slow": 1.0,
        "mscale": 1.0, "mscale_all_dim": 1.0}}
# FLUX.2's 4 latent channels patchified 2x2 to 16; 2 heads of 16 = rope axes 4 + 6 + 6
ERNIE_TINY: dict[str, Any] = dict(
    hidden_size=32, num_attention_heads=2, num_layers=2, ffn_hidden_size=48, in_channels=16,
    out_channels=16, patch_size=1, text_in_dim=ERNIE_MISTRAL_TINY["hidden_size"],
    rope_theta=256, rope_axes_dim=(4, 6, 6), eps=1e-6, qk_layernorm=True)
# baidu/ERNIE-Image's scheduler/scheduler_config.json: a fixed shift of 4, no dynamic one
ERNIE_SCHEDULER: dict[str, Any] = dict(
    base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15,
    num_train_timesteps=1000, shift=4.0, use_dynamic_shifting=False)


def tiny_ernie_transformer(seed: int = 11, config: dict[str, Any] | None = None) -> Any:
    """diffusers' ErnieImageTransformer2DModel of ERNIE_TINY (`config` over it): weights ~
    N(0, (2 / sqrt(fan_in))^2) so the text visibly matters (the tests assert it), norm
    scales near 1, biases small; diffusers' zero-initialised adaLN and output layers drawn
    too (zeros would make every output 0)."""
    import diffusers
    import torch

    model = diffusers.ErnieImageTransformer2DModel(**{**ERNIE_TINY, **(config or {})})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                fan_in = int(p[0].numel())
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in**0.5))
            elif "norm" in name or "_ln" in name:  # RMS norms' scales (adaLN_sa_ln, norm_q)
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def ernie_tokenizer(folder: Path) -> Path:
    """flux2_dev_tiny's Mistral-shaped tokenizer with the post-processor Mistral's
    tokenizer.json has (<s> first), as ERNIE-Image tokenizes prompts with
    add_special_tokens=True."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    tiny_mistral_tokenizer(folder)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", MISTRAL_SPECIAL.index("<s>"))])
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def ernie_transformers_tokenizer(folder: Path) -> Any:
    import transformers

    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), pad_token="<pad>", bos_token="<s>",
        eos_token="</s>", model_max_length=1024)


def tiny_ernie_text_encoder(seed: int = 12) -> Any:
    """A tiny Mistral3Model (ERNIE-Image's text encoder class) of random weights, scaled so
    that a prompt's tokens visibly change its states."""
    import transformers
    from sd_tiny import randomized

    config = transformers.Mistral3Config(
        text_config=transformers.MistralConfig(**ERNIE_MISTRAL_TINY),
        vision_config=transformers.PixtralVisionConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            image_size=32, patch_size=8, head_dim=8),
        image_token_index=MISTRAL_SPECIAL.index("[IMG]"), spatial_merge_size=2)
    return randomized(transformers.Mistral3Model(config), seed, scale=0.6).eval()


def tiny_ernie_pipeline(root: Path) -> Any:
    """diffusers' ErnieImagePipeline of tiny random parts (no prompt enhancer) saved to
    `root / "ernie-image"`; returns the pipeline."""
    import diffusers

    tokenizer = ernie_transformers_tokenizer(ernie_tokenizer(root / "ernie-tok"))
    pipe = diffusers.ErnieImagePipeline(
        transformer=tiny_ernie_transformer(), vae=tiny_flux2_vae(),
        text_encoder=tiny_ernie_text_encoder(), tokenizer=tokenizer,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**ERNIE_SCHEDULER))
    pipe.save_pretrained(root / "ernie-image")
    return pipe
