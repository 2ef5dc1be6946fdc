"""HunyuanImage 2.1 refiner's transformer: diffusers' HunyuanImageTransformer2DModel with a
3D config (`patch_size` [1, 1, 1], `rope_axes_dim` of three axes: frames, rows, columns) over
one-frame latents (B, C, 1, H, W). It is the base's transformer (hunyuanimage) with its
patch embedding a Conv3d and its rotary table built over three axes, the frame axis at
position 0 (no rotation) for every token; the refiner's latents hold the picture's noisy
latents and the condition's stacked on channels (in_channels twice out_channels), its
guidance embedded (`guidance_embeds`), no ByT5 glyph projection.

    model = HunyuanImageRefinerTransformer(config, device=device)
    velocity = model(latents, timestep, states, mask, guidance=guidance)  # (B, C/2, 1, H, W)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray

from .hunyuanimage import HunyuanImageTransformer2DModel, PatchEmbed
from .transformer_ops import kept, rope_tables

__all__ = ["HunyuanImageRefinerTransformer"]


def _refiner_config(config: dict[str, Any]) -> tuple[dict[str, Any], tuple[int, int, int]]:
    """The 2D config the base's model is built from (patches of one frame, the frame and row
    axes' features summed only to pass its check) and the three rotary axes."""
    patch, axes = tuple(config.get("patch_size", ())), tuple(config.get("rope_axes_dim", ()))
    if len(patch) != 3 or patch[0] != 1 or len(axes) != 3:
        raise ValueError(f"patch_size {list(patch)} / rope_axes_dim {list(axes)}: the "
                         "HunyuanImage refiner's transformer has 3D patches of one frame and "
                         "three rotary axes (its config.json: [1, 1, 1] and [16, 56, 56])")
    flat = {**config, "patch_size": patch[1:], "rope_axes_dim": (axes[0] + axes[1], axes[2])}
    return flat, (int(axes[0]), int(axes[1]), int(axes[2]))


class HunyuanImageRefinerTransformer(HunyuanImageTransformer2DModel):
    """One-frame latents (B, in_channels, 1, H, W) and Qwen2.5-VL's prompt states -> the
    velocity (B, out_channels, 1, H, W). Config: the refiner folder's transformer/config.json
    (`config` holds the 2D form the base model runs: `patch_size` without the frame);
    parameter names are diffusers' (`x_embedder.proj.weight` (dim, C, 1, ph, pw), ...).
    diffusers: `HunyuanImageTransformer2DModel(hidden_states, timestep, encoder_hidden_states,
    encoder_attention_mask, guidance=guidance, return_dict=False)[0]` of a 3D config."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        flat, axes = _refiner_config(config)
        super().__init__(flat, dtype=dtype, device=device)
        self.axes = axes  # `config` is the 2D one the base model runs
        cfg, place = self.config, {"dtype": dtype, "device": device}
        self.x_embedder = PatchEmbed(cfg["in_channels"],
                                     cfg["num_attention_heads"] * cfg["attention_head_dim"],
                                     (1, *cfg["patch_size"]), place)  # type: ignore[arg-type]

    def rotary(self, rows: int, columns: int, text_length: int) -> tuple[Tensor, Tensor]:
        """cos/sin tables: the text tokens at position 0 on every axis, then the patches at
        (frame 0, row, column). diffusers: `HunyuanImageRotaryPosEmbed` of 5D latents."""
        def make() -> tuple[Tensor, Tensor]:
            grid = np.stack(np.meshgrid(np.zeros(1), np.arange(rows), np.arange(columns),
                                        indexing="ij"), -1)
            ids = np.concatenate([np.zeros((text_length, 3)), grid.reshape(-1, 3)])
            return rope_tables(ids, self.axes, self.config["rope_theta"], device=self.device)
        return kept(self._tables, (rows, columns, text_length, self.device), make)

    def forward(self, hidden_states: Any, timestep: Any, encoder_hidden_states: Any,
                encoder_attention_mask: Any, timestep_r: Any = None,
                encoder_hidden_states_2: Any = None, encoder_attention_mask_2: Any = None,
                guidance: Any = None, **options: Any) -> Tensor:
        """hidden_states (B, in_channels, 1, H, W) (a Tensor or host array), the rest as the
        base model's forward; the velocity (B, out_channels, 1, H, W)."""
        x = hidden_states if isinstance(hidden_states, Tensor) else asarray(
            np.asarray(hidden_states), device=self.device)
        if x.ndim != 5 or x.shape[2] != 1:
            raise ValueError(f"the HunyuanImage refiner's latents must be (batch, "
                             f"{self.config['in_channels']}, 1, H, W): one frame, got shape "
                             f"{x.shape}")
        batch, channels, _, height, width = x.shape
        out = super().forward(x.reshape(batch, channels, height, width), timestep,
                              encoder_hidden_states, encoder_attention_mask, timestep_r,
                              encoder_hidden_states_2, encoder_attention_mask_2, guidance,
                              **options)
        return out.reshape(batch, out.shape[1], 1, height, width)
