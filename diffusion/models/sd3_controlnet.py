"""Stable Diffusion 3 / 3.5's ControlNet (diffusers' SD3ControlNetModel names and config): a
copy of the MMDiT's first blocks whose image tokens also take the control image's latents
through `pos_embed_input` (a patch projection, zero-initialized when trained). A zero linear
per block (`controlnet_blocks`) turns each block's image tokens into a residual that the
transformer adds after its blocks (`SD3Transformer2DModel.forward(control=...)`).

Two forms: InstantX's SD3 ControlNets (joint blocks over text and image tokens, their own
position table) and Stability's SD 3.5 Large ControlNets (`joint_attention_dim: null`: image
self-attention blocks without text, `use_pos_embed: false`: the transformer's own position
table, which `forward` is then given)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, nn

from .dit_layers import (
    AdaLayerNormZero,
    CombinedTimestepTextProjEmbeddings,
    FeedForward,
    JointAttention,
    JointTransformerBlock,
    layer_norm,
)
from .layers import Place, to_tokens
from .sd3 import PatchEmbed
from .transformer_ops import gated_add, modulate

__all__ = ["SD3ControlNetModel"]

_DEFAULTS: dict[str, Any] = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "num_layers": 18,
    "attention_head_dim": 64, "num_attention_heads": 18, "joint_attention_dim": 4096,
    "caption_projection_dim": 1152, "pooled_projection_dim": 2048, "out_channels": 16,
    "pos_embed_max_size": 96, "extra_conditioning_channels": 0, "dual_attention_layers": (),
    "qk_norm": None, "pos_embed_type": "sincos", "use_pos_embed": True,
    "force_zeros_for_pooled_projection": True,
}


class SD3SingleTransformerBlock(nn.Module):
    """Image tokens alone: adaLN-Zero, self-attention, feed-forward. diffusers:
    `SD3SingleTransformerBlock`."""

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place) -> None:
        self.norm1 = AdaLayerNormZero(dim, place)
        self.attn = JointAttention(dim, heads, head_dim, place, qk_norm=False, context=False)
        self.ff = FeedForward(dim, place)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        shift, scale, gate, shift_mlp, scale_mlp, gate_mlp = self.norm1(temb)
        x = gated_add(x, gate, self.attn(modulate(layer_norm(x), shift, scale))[0])
        return gated_add(x, gate_mlp, self.ff(modulate(layer_norm(x), shift_mlp, scale_mlp)))


class SD3ControlNetModel(nn.Module):
    """diffusers' `SD3ControlNetModel`. Config: its `config.json` dict. Parameter names are
    diffusers' (`pos_embed_input.proj.weight`, `controlnet_blocks.0.weight`, ...)."""

    def __init__(self, config: Mapping[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["qk_norm"] not in (None, "rms_norm"):
            raise ValueError(f"SD3 ControlNet qk_norm {cfg['qk_norm']!r} is not supported; use "
                             "None or 'rms_norm'")
        if cfg["use_pos_embed"] and cfg["pos_embed_type"] != "sincos":
            raise ValueError(f"SD3 ControlNet pos_embed_type {cfg['pos_embed_type']!r} is not "
                             "supported; use 'sincos'")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        heads, head_dim = cfg["num_attention_heads"], cfg["attention_head_dim"]
        dim, patch = heads * head_dim, cfg["patch_size"]
        if cfg["use_pos_embed"]:
            self.pos_embed = PatchEmbed(cfg, dim, place)
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(
            dim, cfg["pooled_projection_dim"], place, guidance=False)
        dual = set(cfg["dual_attention_layers"] or ())
        blocks: list[Any]
        if self.joint:
            self.context_embedder = nn.Linear(cfg["joint_attention_dim"],
                                              cfg["caption_projection_dim"], **place)
            blocks = [JointTransformerBlock(dim, heads, head_dim, place,
                                            qk_norm=cfg["qk_norm"] is not None, dual=i in dual)
                      for i in range(cfg["num_layers"])]
        else:
            blocks = [SD3SingleTransformerBlock(dim, heads, head_dim, place)
                      for _ in range(cfg["num_layers"])]
        self.transformer_blocks = nn.ModuleList(blocks)
        self.controlnet_blocks = nn.ModuleList(
            [nn.Linear(dim, dim, **place) for _ in range(cfg["num_layers"])])
        self.pos_embed_input = nn.Namespace()
        self.pos_embed_input.proj = nn.Conv2d(
            cfg["in_channels"] + cfg["extra_conditioning_channels"], dim, patch, stride=patch,
            **place)

    @property
    def joint(self) -> bool:
        """Whether its blocks read the text (InstantX's form; Stability's 3.5 Large ones
        do not)."""
        return self.config["joint_attention_dim"] is not None

    def forward(self, hidden_states: Tensor, controlnet_cond: Tensor,
                encoder_hidden_states: Tensor | None, pooled: Tensor, timestep: Any, *,
                conditioning_scale: float = 1.0, pos_embed: Any = None) -> list[Tensor]:
        """The blocks' residuals, each (B, tokens, dim) times `conditioning_scale`.
        hidden_states (B, C, H, W) latents; controlnet_cond (B, C, H, W): the control image's
        latents; encoder_hidden_states: the prompt's states (joint form; else unused);
        pooled (B, pooled_projection_dim); timestep (B,) in 0..1000; `pos_embed`: the
        transformer's PatchEmbed, for a model without its own (`use_pos_embed: false`).
        diffusers: `SD3ControlNetModel(hidden_states, controlnet_cond, conditioning_scale,
        encoder_hidden_states, pooled_projections, timestep, return_dict=False)[0]`."""
        embed = getattr(self, "pos_embed", None)
        embed = pos_embed if embed is None else embed
        if embed is None:
            raise ValueError("this SD3 ControlNet uses the transformer's position table: pass "
                             "pos_embed=transformer.pos_embed")
        # 1. tokens with positions plus the control latents' patches, the conditioning
        x = embed(hidden_states) + to_tokens(self.pos_embed_input.proj(controlnet_cond))
        temb = self.time_text_embed(timestep, pooled)
        context = self.context_embedder(encoder_hidden_states) if self.joint else None
        # 2. the blocks, each one's image tokens through its zero linear
        scale = np.float32(conditioning_scale)
        samples = []
        for block, linear in zip(self.transformer_blocks, self.controlnet_blocks):
            if self.joint:
                x, context = block(x, context, temb)
            else:
                x = block(x, temb)
            samples.append(linear(x) * scale)
        return samples
