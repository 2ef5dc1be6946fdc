"""Qwen-Image's ControlNet (diffusers' QwenImageControlNetModel names): InstantX's
Qwen-Image-ControlNet-Union. A few Qwen-Image transformer blocks over the packed latents plus
the control map's packed latents (`controlnet_x_embedder`, zero-initialized) and the prompt's
states; each block's image tokens through a linear (`controlnet_blocks`) are a residual, the
transformer's blocks taking them in turn (block i the residual i // ceil(blocks / count)).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, nn

from .layers import Place
from .qwen_image import QwenImageTrunk
from .transformer_ops import cast, rms_norm, rope_heads

__all__ = ["QwenImageControlNetModel"]

_DEFAULTS: dict[str, Any] = {
    "patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 60,
    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 3584,
    "axes_dims_rope": (16, 56, 56), "extra_condition_channels": 0,
}


class QwenImageControlNetModel(QwenImageTrunk):
    """Packed latents, the map's packed latents and the prompt's states -> one residual per
    block (B, Li, dim), times the unit's weight: the transformer's QwenImageTrunk and the
    ControlNet's own layers.

    Config: a QwenImageControlNetModel `config.json` (diffusers' fields; InstantX's Union: 5
    blocks). Parameter names are diffusers' (`controlnet_x_embedder.weight`,
    `controlnet_blocks.0.weight`, `transformer_blocks.0.attn.to_q.weight`, ...). diffusers:
    `QwenImageControlNetModel(hidden_states, controlnet_cond, conditioning_scale,
    encoder_hidden_states, encoder_hidden_states_mask, timestep, img_shapes)`."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        place: Place = {"dtype": dtype, "device": device}
        super().__init__(cfg, place)
        heads, head_dim = rope_heads(cfg)
        dim = heads * head_dim
        self.controlnet_blocks = nn.ModuleList(
            [nn.Linear(dim, dim, **place) for _ in range(cfg["num_layers"])])
        self.controlnet_x_embedder = nn.Linear(
            cfg["in_channels"] + cfg["extra_condition_channels"], dim, **place)

    def forward(self, hidden_states: Tensor, control: Tensor, encoder_hidden_states: Tensor,
                timestep: Any, rotary: tuple[Tensor, Tensor], encoder_mask: Any = None, *,
                conditioning_scale: float = 1.0) -> list[Tensor]:
        """hidden_states (B, Li, in_channels) packed latents, control (B, Li, in_channels +
        extra_condition_channels) the map's, encoder_hidden_states (B, Lt,
        joint_attention_dim), timestep (B,) in [0, 1]; `rotary`: the transformer's tables
        for these sizes (`QwenImageTransformer2DModel.rotary`); encoder_mask (B, Lt)
        nonzero for the text tokens attended to, or None for all."""
        batch, length, _ = hidden_states.shape
        mask = None
        if encoder_mask is not None:
            keep = np.asarray(encoder_mask) != 0
            keys = np.concatenate([keep, np.ones((batch, length), bool)], axis=1)
            mask = asarray(keys.astype(np.uint32).reshape(batch, 1, 1, -1), device=self.device)
        # 1. the patches' and the map's embeddings summed; the timestep's; the text's
        x = self.img_in(hidden_states) + self.controlnet_x_embedder(control)
        temb = self.time_text_embed(np.asarray(timestep, np.float32), self.device)
        states = rms_norm(encoder_hidden_states, self.txt_norm.weight, self.txt_norm.eps)
        context = self.txt_in(cast(states, self.dtype))
        # 2. the blocks, each one's image tokens through its linear, times the weight
        scale = np.float32(conditioning_scale)
        samples = []
        for block, linear in zip(self.transformer_blocks, self.controlnet_blocks):
            x, context = block(x, context, temb, rotary, mask)
            samples.append(linear(x) * scale)
        return samples
