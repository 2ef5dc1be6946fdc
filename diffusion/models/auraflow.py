"""The AuraFlow transformer (fal's AuraFlow v0.2/v0.3, Pony V7; diffusers'
AuraFlowTransformer2DModel names): patches through a linear layer plus the centre crop of a
learned position table, UMT5's states through `context_embedder` after 8 learned register
tokens, joint (MMDiT) blocks then single blocks over text and image together, no biases but
the patch and time embeddings'."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, nn, permute, take_slice

from .auraflow_blocks import AuraFlowJointTransformerBlock, AuraFlowSingleTransformerBlock
from .dit_layers import TimestepEmbedding
from .layers import Place
from .step_cache import BranchCache, run_blocks
from .transformer_ops import modulate

__all__ = ["AuraFlowTransformer2DModel"]

_DEFAULTS: dict[str, Any] = {
    "sample_size": 64, "patch_size": 2, "in_channels": 4, "num_mmdit_layers": 4,
    "num_single_dit_layers": 32, "attention_head_dim": 256, "num_attention_heads": 12,
    "joint_attention_dim": 2048, "caption_projection_dim": 3072, "out_channels": 4,
    "pos_embed_max_size": 1024,
}
REGISTERS = 8  # learned tokens before the text's


class AuraFlowPatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, H/p * W/p, dim): each p x p patch (channels outermost) through
    `proj`, plus the rows of the square position table `pos_embed` (1, max, dim) at the
    patch grid centred as diffusers centres it (start side // 2 - grid // 2). diffusers:
    `AuraFlowPatchEmbed`."""

    def __init__(self, cfg: dict[str, Any], dim: int, place: Place) -> None:
        self.patch = patch = cfg["patch_size"]
        self.side = int(cfg["pos_embed_max_size"] ** 0.5)
        self.proj = nn.Linear(patch * patch * cfg["in_channels"], dim, **place)
        self.pos_embed = nn.parameter((1, cfg["pos_embed_max_size"], dim), **place)

    def forward(self, latent: Tensor) -> Tensor:
        batch, channels, height, width = latent.shape
        p, side = self.patch, self.side
        rows, columns = height // p, width // p
        if rows > side or columns > side:
            raise ValueError(f"latents of {rows} x {columns} patches exceed this model's "
                             f"position table of {side} x {side}; generate a smaller picture")
        patches = permute(latent.reshape(batch, channels, rows, p, columns, p),
                          (0, 2, 4, 1, 3, 5)).reshape(batch, rows * columns, channels * p * p)
        top, left = side // 2 - rows // 2, side // 2 - columns // 2
        table = take_slice(self.pos_embed, 0, side * side, axis=1).reshape(side, side, -1)
        crop = take_slice(take_slice(table, top, top + rows, axis=0), left, left + columns,
                          axis=1)
        return self.proj(patches) + crop.reshape(1, rows * columns, -1)


class AuraFlowTransformer2DModel(nn.Module):
    """Latents (B, C, H, W) -> the flow (B, out_channels, H, W).

    Config: `transformer/config.json` of an AuraFlow folder. Parameter names are diffusers'
    (`pos_embed.proj.weight`, `joint_transformer_blocks.0.attn.add_q_proj.weight`,
    `register_tokens`, ...). diffusers: `AuraFlowTransformer2DModel(hidden_states,
    encoder_hidden_states, timestep).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        heads, head_dim = cfg["num_attention_heads"], cfg["attention_head_dim"]
        dim = heads * head_dim
        if cfg["caption_projection_dim"] != dim:
            raise ValueError(f"caption_projection_dim {cfg['caption_projection_dim']} must "
                             f"equal the transformer width {dim} (heads x head dim)")
        self.dtype = np.dtype(dtype)
        self.pos_embed = AuraFlowPatchEmbed(cfg, dim, place)
        self.context_embedder = nn.Linear(cfg["joint_attention_dim"], dim, False, **place)
        self.time_step_proj = TimestepEmbedding(256, dim, place)
        self.joint_transformer_blocks = nn.ModuleList([
            AuraFlowJointTransformerBlock(dim, heads, head_dim, place)
            for _ in range(cfg["num_mmdit_layers"])])
        self.single_transformer_blocks = nn.ModuleList([
            AuraFlowSingleTransformerBlock(dim, heads, head_dim, place)
            for _ in range(cfg["num_single_dit_layers"])])
        self.norm_out = nn.Namespace()  # AuraFlowPreFinalBlock: scale, shift; no norm
        self.norm_out.linear = nn.Linear(dim, 2 * dim, False, **place)
        self.proj_out = nn.Linear(dim, cfg["patch_size"] ** 2 * cfg["out_channels"], False,
                                  **place)
        self.register_tokens = nn.parameter((1, REGISTERS, dim), **place)

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor,
                timestep: Any, *, cache: BranchCache | None = None) -> Tensor:
        """hidden_states (B, C, H, W) latents (H, W multiples of patch_size);
        encoder_hidden_states (B, L, joint_attention_dim): UMT5's masked states; timestep (B,)
        host numbers or a float32 Tensor (a replayed step's) in 0..1 (sigma, as
        AuraFlowPipeline passes t / 1000). `cache`: a step
        cache branch (`step_cache.StepCache.branch()`) the blocks run through, its calls in
        step order (the first joint block decides whether the others run)."""
        batch, _, height, width = hidden_states.shape
        patch = self.config["patch_size"]
        if height % patch or width % patch:
            raise ValueError(f"latents of {height} x {width} are not multiples of the patch "
                             f"size {patch}; use a picture size divisible by {8 * patch}")
        device = self.proj_out.weight.device
        # 1. image tokens with positions; the conditioning vector; registers then the text
        x = self.pos_embed(hidden_states)
        t = timestep.reshape(-1) if isinstance(timestep, Tensor) else np.asarray(
            timestep, np.float32).reshape(-1)
        temb = self.time_step_proj(nn.timestep_embedding(
            t, 256, flip_sin_to_cos=True, downscale_freq_shift=0, scale=1000,
            dtype=self.dtype, device=device))
        activated = nn.silu(temb)  # every adaLN's input, once
        text = self.context_embedder(encoder_hidden_states)
        registers = self.register_tokens
        if batch > 1:
            registers = concatenate([registers] * batch, axis=0)
        context = concatenate([registers, text], axis=1)
        # 2. joint blocks, then single blocks over text and image together
        joint = list(self.joint_transformer_blocks)

        def head(x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
            return joint[0](x, context, activated) if joint else (x, context)

        def tail(x: Tensor, context: Tensor) -> Tensor:
            for block in joint[1:]:
                x, context = block(x, context, activated)
            if not len(self.single_transformer_blocks):
                return x
            joined = concatenate([context, x], axis=1)
            for single in self.single_transformer_blocks:
                joined = single(joined, activated)
            return take_slice(joined, context.shape[1], joined.shape[1], axis=1)

        x = run_blocks(cache, x, context, head, tail)
        # 3. the final scale and shift (no norm), projection back to patches, to a picture
        modulation = self.norm_out.linear(activated)
        dim = modulation.shape[1] // 2
        scale = take_slice(modulation, 0, dim, axis=1).reshape(batch, 1, dim)
        shift = take_slice(modulation, dim, 2 * dim, axis=1).reshape(batch, 1, dim)
        out = self.proj_out(modulate(x, shift, scale))
        rows, columns, channels = height // patch, width // patch, self.config["out_channels"]
        out = out.reshape(batch, rows, columns, patch, patch, channels)
        return permute(out, (0, 5, 1, 3, 2, 4)).reshape(batch, channels, height, width)

