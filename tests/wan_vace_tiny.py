"""A tiny random Wan VACE transformer (diffusers' WanVACETransformer3DModel) built in-process,
and its diffusers folder for the VACE pipeline's tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized
from wan_tiny import WAN_TINY

# WAN_TINY's blocks, 3 of them, hints after blocks 0 and 2; the control channels as Wan VACE
# reads them with the tiny VAE (wan_tiny.WAN_VAE_TINY: 4 latent channels, 8x spatial): the
# inactive and reactive latents (4 + 4) and the mask folded 8 x 8 (64)
VACE_TINY: dict[str, Any] = {**WAN_TINY, "num_layers": 3, "vace_layers": [0, 2],
                             "vace_in_channels": 4 + 4 + 64}


def tiny_vace_transformer(seed: int = 21) -> Any:
    """diffusers' WanVACETransformer3DModel of VACE_TINY, random weights scaled (as
    wan_tiny's) so that the text and the control latents visibly matter."""
    import diffusers

    return randomized(diffusers.WanVACETransformer3DModel(**VACE_TINY), seed, scale=0.3)


def tiny_vace_transformer_folder(path: Path, seed: int = 21) -> Any:
    """`tiny_vace_transformer(seed)` saved by diffusers' save_pretrained to `path` (a
    pipeline folder's `transformer/`: config.json, diffusion_pytorch_model.safetensors);
    returns the model."""
    model = tiny_vace_transformer(seed)
    model.save_pretrained(path)
    return model


def tiny_wan_vace_pipeline(root: Path, *, boundary_ratio: float | None = None) -> Any:
    """diffusers' WanVACEPipeline of tiny random parts (wan_tiny's VAE, UMT5 and scheduler,
    `tiny_vace_transformer`) saved to `root / "wan-vace"`; with `boundary_ratio`, Wan 2.2
    A14B's layout (a second VACE transformer, another seed, as the low-noise expert) saved to
    `root / "wan-vace-a14b"`; returns it."""
    import diffusers
    import transformers
    from flow_tiny import tiny_t5_tokenizer
    from wan_tiny import WAN_SCHEDULER, tiny_umt5, tiny_wan_vae

    tiny_t5_tokenizer(root / "umt5-tokenizer")
    tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / "umt5-tokenizer" / "tokenizer.json"))
    low = None if boundary_ratio is None else tiny_vace_transformer(22)
    pipe = diffusers.WanVACEPipeline(
        tokenizer=tokenizer, text_encoder=tiny_umt5(), transformer=tiny_vace_transformer(),
        transformer_2=low, boundary_ratio=boundary_ratio, vae=tiny_wan_vae(),
        scheduler=diffusers.UniPCMultistepScheduler(**WAN_SCHEDULER))
    pipe.save_pretrained(root / ("wan-vace" if low is None else "wan-vace-a14b"))
    return pipe


def vace_original_names(state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A diffusers WanVACETransformer3DModel state dict in Wan VACE's original names (the
    inverse of diffusers' converter: its VACE blocks' `before_proj` / `after_proj` are
    diffusers' `proj_in` / `proj_out`, the rest as the base model's)."""
    from wan_tiny import original_names

    vace = {key.replace(".proj_in.", ".before_proj.").replace(".proj_out.", ".after_proj."):
            value for key, value in state.items() if key.startswith("vace_blocks.")}
    return original_names({**{k: v for k, v in state.items()
                               if not k.startswith("vace_blocks.")}, **vace}, prefix)
