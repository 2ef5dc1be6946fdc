"""The MMDiT of Stable Diffusion 3 / 3.5 (diffusers' SD3Transformer2DModel names): patch
embedding with cropped sin-cos positions, joint attention over text and image tokens,
adaLN-Zero, QK-norm (3.5) and SD3.5 Medium's extra image self-attention (dual) blocks."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, nn, permute, take_slice

from .dit_layers import (
    AdaLayerNormContinuous,
    CombinedTimestepTextProjEmbeddings,
    JointTransformerBlock,
)
from .layers import Place, to_tokens
from .step_cache import BranchCache, run_blocks

_DEFAULTS: dict[str, Any] = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "num_layers": 18,
    "attention_head_dim": 64, "num_attention_heads": 18, "joint_attention_dim": 4096,
    "caption_projection_dim": 1152, "pooled_projection_dim": 2048, "out_channels": 16,
    "pos_embed_max_size": 96, "dual_attention_layers": (), "qk_norm": None,
}


class PatchEmbed(nn.Module):
    """A stride-p conv to tokens plus the centre crop of a (max x max) sin-cos position
    table (`pos_embed`, stored in checkpoints). diffusers: `PatchEmbed(...,
    pos_embed_max_size=...)`."""

    def __init__(self, cfg: dict[str, Any], dim: int, place: Place) -> None:
        patch, size = cfg["patch_size"], cfg["pos_embed_max_size"]
        self.patch, self.max_size = patch, size
        self.proj = nn.Conv2d(cfg["in_channels"], dim, patch, stride=patch, **place)
        self.pos_embed = nn.parameter((1, size * size, dim), **place)

    def forward(self, latent: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, H/p * W/p, dim)."""
        height, width = latent.shape[2] // self.patch, latent.shape[3] // self.patch
        if height > self.max_size or width > self.max_size:
            raise ValueError(f"latents of {height} x {width} patches exceed this model's "
                             f"position table of {self.max_size} x {self.max_size}; generate "
                             "a smaller picture")
        top, left = (self.max_size - height) // 2, (self.max_size - width) // 2
        table = self.pos_embed.reshape(self.max_size, self.max_size, -1)
        crop = take_slice(take_slice(table, top, top + height, axis=0), left, left + width,
                          axis=1)
        return to_tokens(self.proj(latent)) + crop.reshape(1, height * width, -1)


class SD3Transformer2DModel(nn.Module):
    """Latents (B, C, H, W) -> the flow (B, out_channels, H, W).

    Config: `transformer/config.json` of an SD3 folder (SD3 Medium, SD3.5 Large/Medium;
    `qk_norm: "rms_norm"` and `dual_attention_layers` for 3.5). Parameter names are
    diffusers' (`pos_embed.proj.weight`, `transformer_blocks.0.attn.add_q_proj.weight`, ...).
    diffusers: `SD3Transformer2DModel(hidden_states, encoder_hidden_states,
    pooled_projections, timestep, skip_layers=...).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["qk_norm"] not in (None, "rms_norm"):
            raise ValueError(f"SD3 qk_norm {cfg['qk_norm']!r} is not supported; use None "
                             "(SD3) or 'rms_norm' (SD3.5)")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        heads, head_dim = cfg["num_attention_heads"], cfg["attention_head_dim"]
        dim = heads * head_dim
        if cfg["caption_projection_dim"] != dim:
            raise ValueError(f"caption_projection_dim {cfg['caption_projection_dim']} must "
                             f"equal the transformer width {dim} (heads x head dim)")
        layers, dual = cfg["num_layers"], set(cfg["dual_attention_layers"] or ())
        self.pos_embed = PatchEmbed(cfg, dim, place)
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(
            dim, cfg["pooled_projection_dim"], place, guidance=False)
        self.context_embedder = nn.Linear(cfg["joint_attention_dim"], dim, **place)
        self.transformer_blocks = nn.ModuleList([
            JointTransformerBlock(dim, heads, head_dim, place, qk_norm=cfg["qk_norm"] is not None,
                                  context_pre_only=i == layers - 1, dual=i in dual)
            for i in range(layers)])
        self.norm_out = AdaLayerNormContinuous(dim, place)
        self.proj_out = nn.Linear(dim, cfg["patch_size"] ** 2 * cfg["out_channels"], **place)

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor, pooled: Tensor,
                timestep: Any, *, skip_layers: Collection[int] = (),
                cache: BranchCache | None = None,
                control: Sequence[Tensor] | None = None) -> Tensor:
        """hidden_states (B, C, H, W) latents (H, W multiples of patch_size);
        encoder_hidden_states (B, L, joint_attention_dim): CLIP-L + CLIP-G + T5 states;
        pooled (B, pooled_projection_dim); timestep (B,) in 0..1000 (sigma x 1000, as
        StableDiffusion3Pipeline passes it). `skip_layers`: block indices left out (SD3.5's
        skip-layer guidance). `cache`: a step cache branch (`step_cache.StepCache.branch()`)
        the blocks run through, its calls in step order. `control`: a ControlNet's residuals
        (each (B, tokens, dim)), added to the image tokens after the blocks that keep their
        text stream, block i taking control[int(i / (blocks / len(control)))], as diffusers
        adds `block_controlnet_hidden_states`."""
        batch, _, height, width = hidden_states.shape
        patch = self.config["patch_size"]
        if height % patch or width % patch:
            raise ValueError(f"latents of {height} x {width} are not multiples of the patch "
                             f"size {patch}; use a picture size divisible by {8 * patch}")
        # 1. tokens with positions, the conditioning vector, the text tokens
        x = self.pos_embed(hidden_states)
        temb = self.time_text_embed(timestep, pooled)
        context = self.context_embedder(encoder_hidden_states)
        activated = nn.silu(temb)  # every adaLN's input, once
        # 2. joint blocks; the last one ends the text stream (the first apart: a step cache
        # decides after it whether the others run)
        blocks = [(index, block) for index, block in enumerate(self.transformer_blocks)
                  if index not in skip_layers]
        interval = len(self.transformer_blocks) / len(control) if control else 0.0

        def run(index: int, block: Any, x: Tensor, context: Any) -> tuple[Tensor, Any]:
            x, context = block(x, context, temb, activated=activated)
            if control and not block.context_pre_only:
                x = x + control[int(index / interval)]
            return x, context

        def head(x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
            return run(*blocks[0], x, context) if blocks else (x, context)

        def tail(x: Tensor, context: Tensor) -> Tensor:
            for index, block in blocks[1:]:
                x, context = run(index, block, x, context)
            return x

        x = run_blocks(cache, x, context, head, tail)
        # 3. final modulated norm, projection back to patches, patches back to a picture
        out = self.proj_out(self.norm_out(x, temb, activated))
        rows, columns, channels = height // patch, width // patch, self.config["out_channels"]
        out = out.reshape(batch, rows, columns, patch, patch, channels)
        return permute(out, (0, 5, 1, 3, 2, 4)).reshape(batch, channels, height, width)
