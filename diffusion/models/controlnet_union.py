"""ControlNetUnionModel (xinsir's controlnet-union-sdxl-1.0 and its ProMax) with diffusers'
parameter names and config.

A ControlNet whose one set of weights serves several control types. Beside ControlNetModel's
layers it has:
- `task_embedding` (num_control_type, num_trans_channel): one vector per control type, added
  to the spatial mean of the control image's embedding;
- `transformer_layes` (diffusers' spelling): CLIP-style residual attention blocks over the
  tokens [the control's mean + its type's vector, conv_in's mean];
- `spatial_ch_projs`: the control token's output as a per-channel offset of the control
  embedding added to conv_in's output;
- `control_add_embedding`: the one-hot control type, each entry sinusoidally embedded, added
  to the time embedding.

One control image and type per call (a unit's `union_mode`), as diffusers'
`StableDiffusionXLControlNetUnionPipeline(control_image=[image], control_mode=[mode])`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, nn
from gpustd.reduction import mean
from gpustd.shape import concatenate, split, take_slice, transpose

from .controlnet import ControlNetModel
from .layers import Place

__all__ = ["ControlNetUnionModel"]

# diffusers' ControlNetUnionModel.__init__ defaults where they differ from ControlNetModel's
_DEFAULTS: dict[str, Any] = {
    "conditioning_embedding_out_channels": (48, 96, 192, 384), "num_control_type": 6,
    "num_trans_channel": 320, "num_trans_head": 8, "num_trans_layer": 1,
    "num_proj_channel": 320,
}


class _AttentionBlock(nn.Module):
    """CLIP's ResidualAttentionBlock: x + attn(ln_1(x)), then x + mlp(ln_2(x)), mlp's
    activation QuickGELU. torch's nn.MultiheadAttention (attn.in_proj_weight / in_proj_bias,
    attn.out_proj) built without batch_first, as the model's authors call it on (B, L, C):
    attention runs along the first axis (the batch), once per token position. Kept so, the
    model's pictures are the ones it was trained and published with."""

    def __init__(self, width: int, heads: int, place: Place) -> None:
        self.heads = heads
        self.attn = nn.Namespace()
        self.attn.in_proj_weight = nn.parameter((3 * width, width), **place)
        self.attn.in_proj_bias = nn.parameter((3 * width,), **place)
        self.attn.out_proj = nn.Linear(width, width, **place)
        self.ln_1 = nn.LayerNorm(width, **place)
        self.mlp = nn.Namespace()
        self.mlp.c_fc = nn.Linear(width, 4 * width, **place)
        self.mlp.c_proj = nn.Linear(4 * width, width, **place)
        self.ln_2 = nn.LayerNorm(width, **place)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, C) -> (B, L, C)."""
        qkv = nn.linear(self.ln_1(x), self.attn.in_proj_weight, self.attn.in_proj_bias)
        q, k, v = split(transpose(qkv, (1, 0, 2)), 3, axis=2)  # (L, B, C): B is the sequence
        attended = nn.attention(q, k, v, heads=self.heads)
        x = x + transpose(self.attn.out_proj(attended), (1, 0, 2))
        return x + self.mlp.c_proj(nn.quick_gelu(self.mlp.c_fc(self.ln_2(x))))


class ControlNetUnionModel(ControlNetModel):
    """diffusers' `ControlNetUnionModel`. Config: its `config.json` dict (SDXL's:
    `addition_embed_type="text_time"`, then `forward` needs `added_cond`); `forward` as
    ControlNetModel's with `union_mode`, the control type (0 .. num_control_type - 1)."""

    def __init__(self, config: Mapping[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg.get("addition_time_embed_dim") is None:
            raise ValueError("ControlNet Union config has no addition_time_embed_dim (the "
                             "width of each control type's sinusoidal embedding)")
        if cfg["num_proj_channel"] != cfg["block_out_channels"][0]:
            raise ValueError(f"ControlNet Union config num_proj_channel="
                             f"{cfg['num_proj_channel']} must equal block_out_channels[0]="
                             f"{cfg['block_out_channels'][0]}")
        super().__init__(cfg, dtype=dtype, device=device)
        place: Place = {"dtype": dtype, "device": device}
        width, types = cfg["num_trans_channel"], cfg["num_control_type"]
        temb = cfg["block_out_channels"][0] * 4
        self.task_embedding = nn.parameter((types, width), **place)
        self.transformer_layes = nn.ModuleList([
            _AttentionBlock(width, cfg["num_trans_head"], place)
            for _ in range(cfg["num_trans_layer"])])
        self.spatial_ch_projs = nn.Linear(width, cfg["num_proj_channel"], **place)
        self.control_add_embedding = nn.Namespace()
        self.control_add_embedding.linear_1 = nn.Linear(
            cfg["addition_time_embed_dim"] * types, temb, **place)
        self.control_add_embedding.linear_2 = nn.Linear(temb, temb, **place)

    @property
    def union(self) -> bool:
        return True

    def _check_mode(self, union_mode: int | None) -> int:
        types = self.config["num_control_type"]
        if union_mode is None or not 0 <= union_mode < types:
            raise ValueError(f"a ControlNet Union needs its control type, 0 .. {types - 1} "
                             f"(--control-union-mode, a unit's union_mode); got {union_mode}")
        return int(union_mode)

    def control_embedding(self, sample: Tensor, timesteps: Any,
                          added_cond: Mapping[str, Any] | None,
                          union_mode: int | None) -> Tensor:
        """silu(time embedding + the control type's + SDXL's added embedding)."""
        mode = self._check_mode(union_mode)
        cfg, batch = self.config, sample.shape[0]
        one_hot = np.zeros(cfg["num_control_type"], np.float32)
        one_hot[mode] = 1.0
        dim = cfg["addition_time_embed_dim"]
        types = nn.timestep_embedding(one_hot, dim, dtype=sample.dtype,
                                      flip_sin_to_cos=cfg["flip_sin_to_cos"],
                                      downscale_freq_shift=cfg["freq_shift"],
                                      device=sample.device).reshape(1, one_hot.size * dim)
        types = concatenate([types] * batch, axis=0) if batch > 1 else types
        added = self.control_add_embedding
        emb = self.time_embedding_of(sample, timesteps) + added.linear_2(
            nn.silu(added.linear_1(types)))
        if self.uses_added_cond:
            emb = emb + self.added_embedding_of(added_cond, batch, sample)
        elif added_cond is not None:
            raise ValueError("added_cond is for SDXL ControlNets (addition_embed_type="
                             "'text_time'); this one takes none: pass added_cond=None")
        return nn.silu(emb)

    def control_input(self, sample: Tensor, image: Tensor, union_mode: int | None) -> Tensor:
        """conv_in(sample) + the control embedding + its channel offset from the transformer
        over [control token, conv_in token]."""
        mode = self._check_mode(union_mode)
        h = self.conv_in(sample)
        condition = self.cond_embedding(image)
        batch, width = h.shape[0], self.config["num_trans_channel"]
        task = take_slice(self.task_embedding, mode, mode + 1, axis=0)
        tokens = concatenate([(mean(condition, axis=(2, 3)) + task).reshape(batch, 1, width),
                              mean(h, axis=(2, 3)).reshape(batch, 1, width)], axis=1)
        for layer in self.transformer_layes:
            tokens = layer(tokens)
        alpha = self.spatial_ch_projs(take_slice(tokens, 0, 1, axis=1).reshape(batch, width))
        return h + (condition + alpha.reshape(batch, alpha.shape[1], 1, 1))
