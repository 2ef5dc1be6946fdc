"""FLUX.1's ControlNet (diffusers' FluxControlNetModel names and config): a shortened copy of
the FLUX transformer (its embeddings, a few double- and single-stream blocks) whose image
tokens also take the control image's packed VAE latents through `controlnet_x_embedder`
(zero-initialized when trained). A zero linear per block (`controlnet_blocks`,
`controlnet_single_blocks`) turns each block's image tokens into a residual that the FLUX
transformer adds after its own blocks (`FluxTransformer2DModel.forward(control=...)`, every
`ceil(blocks / residuals)` blocks taking the same one).

The Union form (InstantX's, Shakker-Labs' Union Pro; config `num_mode`) picks its control
type by a mode: `controlnet_mode_embedder`'s row, put in front of the text tokens.

XLabs' form (x-flux's ControlNetFlux; config `conditioning_embedding_channels`) reads the
control picture itself: `input_hint_block`, eight 3x3 convolutions (three of stride 2), turns
it into (B, 16, H/8, W/8) features whose 2x2 patches are its control tokens; it has double
blocks only, and its few residuals repeat over the transformer's blocks (block i takes
residual i mod their count: `blocks_repeat`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, nn, permute, take_slice

from .flux import FluxTrunk
from .layers import Place
from .transformer_ops import rope_heads, rope_tables

__all__ = ["FluxControlNetModel"]

_DEFAULTS: dict[str, Any] = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38,
    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
    "pooled_projection_dim": 768, "guidance_embeds": False, "axes_dims_rope": (16, 56, 56),
    "num_mode": None, "conditioning_embedding_channels": None,
}
_ROPE_THETA = 10000.0


class FluxControlNetModel(FluxTrunk):
    """diffusers' `FluxControlNetModel`: the transformer's FluxTrunk and the ControlNet's
    own layers. Config: its `config.json` dict. Parameter names are diffusers'
    (`controlnet_x_embedder.weight`, `controlnet_blocks.0.weight`,
    `controlnet_mode_embedder.weight`, ...)."""

    def __init__(self, config: Mapping[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        place: Place = {"dtype": dtype, "device": device}
        super().__init__(cfg, place)
        heads, head_dim = rope_heads(cfg)
        dim = heads * head_dim
        self.controlnet_blocks = nn.ModuleList(
            [nn.Linear(dim, dim, **place) for _ in range(cfg["num_layers"])])
        self.controlnet_single_blocks = nn.ModuleList(
            [nn.Linear(dim, dim, **place) for _ in range(cfg["num_single_layers"])])
        if self.union:
            self.controlnet_mode_embedder = nn.Embedding(int(cfg["num_mode"]), dim, **place)
        self.controlnet_x_embedder = nn.Linear(cfg["in_channels"], dim, **place)
        hint = cfg["conditioning_embedding_channels"]
        if hint is not None:
            if 4 * int(hint) != cfg["in_channels"]:
                raise ValueError(f"an input hint block of {hint} channels gives 2x2 patches "
                                 f"of {4 * int(hint)}, not in_channels {cfg['in_channels']}")
            self.input_hint_block = _HintBlock(int(hint), place)

    @property
    def takes_pixels(self) -> bool:
        """Whether it reads the control picture itself (XLabs' input hint block), not its
        VAE latents."""
        return self.config["conditioning_embedding_channels"] is not None

    @property
    def blocks_repeat(self) -> bool:
        """Whether the transformer's double block i takes residual i mod their count (XLabs'
        rule, diffusers' `controlnet_blocks_repeat`) rather than i // ceil(blocks / count)."""
        return self.takes_pixels

    @property
    def union(self) -> bool:
        """Whether it is a Union ControlNet, which takes a control mode."""
        return self.config["num_mode"] is not None

    def rotary(self, text_length: int, img_ids: Any) -> tuple[Tensor, Tensor]:
        """cos/sin tables for `text_length` text tokens (the prompt's; a Union model's mode
        token is added here) then the image patches at `img_ids` (Li, 3)."""
        ids = np.concatenate([np.zeros((text_length + self.union, 3), np.float32),
                              np.asarray(img_ids, np.float32)])
        return rope_tables(ids, tuple(self.config["axes_dims_rope"]), _ROPE_THETA,
                           device=self.x_embedder.weight.device)

    def forward(self, hidden_states: Tensor, controlnet_cond: Tensor, encoder_hidden_states: Tensor,
                pooled: Tensor, timestep: Any, guidance: Any = None, *,
                rotary: tuple[Tensor, Tensor], mode: int | None = None,
                conditioning_scale: float = 1.0) -> tuple[list[Tensor], list[Tensor]]:
        """(the double blocks' residuals, the single blocks'), each (B, Li, dim) times
        `conditioning_scale`. hidden_states (B, Li, in_channels): packed latents;
        controlnet_cond (B, Li, in_channels): the control image's packed latents (a model
        that `takes_pixels`: the picture (B, 3, 16 h, 16 w) in [-1, 1] for h x w tokens);
        encoder_hidden_states, pooled, timestep (B,) in [0, 1], guidance (B,) (models with
        `guidance_embeds`; else None) as FluxTransformer2DModel takes them; `rotary`: the
        tables of `rotary(...)`; `mode`: a Union model's control type. diffusers:
        `FluxControlNetModel(hidden_states, controlnet_cond, controlnet_mode,
        conditioning_scale, encoder_hidden_states, pooled_projections, timestep, img_ids,
        txt_ids, guidance, return_dict=False)`."""
        cfg = self.config
        if (guidance is None) == bool(cfg["guidance_embeds"]):
            raise ValueError("this FLUX ControlNet " + (
                "embeds a guidance scale: pass guidance=" if cfg["guidance_embeds"]
                else "has no guidance embedding: pass guidance=None"))
        if self.union != (mode is not None):
            raise ValueError("a Union FLUX ControlNet needs a control mode (0 .. "
                             f"{cfg['num_mode'] - 1})" if self.union else
                             "this FLUX ControlNet is not a Union one: give no control mode")
        # 1. embeddings; the control latents added to the image tokens
        if self.takes_pixels:
            controlnet_cond = self.input_hint_block(controlnet_cond)
        x = self.x_embedder(hidden_states) + self.controlnet_x_embedder(controlnet_cond)
        temb = self.time_text_embed(self._thousandfold(timestep), pooled,
                                    None if guidance is None else self._thousandfold(guidance))
        context = self.context_embedder(encoder_hidden_states)
        if mode is not None:
            if not 0 <= mode < cfg["num_mode"]:
                raise ValueError(f"control mode {mode} is outside this Union ControlNet's "
                                 f"0 .. {cfg['num_mode'] - 1}")
            modes = self.controlnet_mode_embedder(np.full((context.shape[0], 1), mode))
            context = concatenate([modes.astype(context.dtype), context], axis=1)
        # 2. the blocks, each one's image tokens kept
        samples: list[Tensor] = []
        for block in self.transformer_blocks:
            x, context = block(x, context, temb, rotary)
            samples.append(x)
        text_length = context.shape[1]
        joined = concatenate([context, x], axis=1)
        single_samples: list[Tensor] = []
        for single in self.single_transformer_blocks:
            joined = single(joined, temb, rotary)
            single_samples.append(take_slice(joined, text_length, joined.shape[1], axis=1))
        # 3. the zero linears, scaled
        scale = np.float32(conditioning_scale)
        return ([layer(s) * scale for layer, s in zip(self.controlnet_blocks, samples)],
                [layer(s) * scale
                 for layer, s in zip(self.controlnet_single_blocks, single_samples)])

    def _thousandfold(self, values: Any) -> Any:
        dtype = self.x_embedder.weight.dtype
        return np.asarray(values, dtype).reshape(-1) * dtype.type(1000)


class _HintBlock(nn.Module):
    """The control picture (B, 3, H, W) -> its tokens (B, H/16 * W/16, 4 channels): x-flux's
    `input_hint_block` (SiLU after every convolution but the last), its output's 2x2 patches
    packed channel-major as x-flux's `rearrange(..., "b c (h ph) (w pw) -> b (h w) (c ph
    pw)")`. Names: diffusers' ControlNetConditioningEmbedding's."""

    def __init__(self, channels: int, place: Place) -> None:
        width = 16
        self.conv_in = nn.Conv2d(3, width, 3, padding=1, **place)
        self.blocks = nn.ModuleList([nn.Conv2d(width, width, 3, padding=1, stride=1 + i % 2,
                                               **place) for i in range(6)])
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1, **place)

    def forward(self, picture: Tensor) -> Tensor:
        if picture.ndim != 4 or picture.shape[1] != 3 or picture.shape[2] % 16 or (
                picture.shape[3] % 16):
            raise ValueError(f"an XLabs ControlNet's control picture must be (B, 3, H, W) "
                             f"with H and W multiples of 16, got {tuple(picture.shape)}")
        h = nn.silu(self.conv_in(picture))
        for block in self.blocks:
            h = nn.silu(block(h))
        h = self.conv_out(h)
        b, c, height, width = h.shape
        patches = permute(h.reshape(b, c, height // 2, 2, width // 2, 2), (0, 2, 4, 1, 3, 5))
        return patches.reshape(b, (height // 2) * (width // 2), c * 4)
