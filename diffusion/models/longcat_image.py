"""The LongCat-Image transformer (diffusers' LongCatImageTransformer2DModel names): FLUX.1's
double- and single-stream blocks, rotary embedding and output head as they are, conditioned on
the timestep alone (`time_embed`: no pooled text, no guidance embedding) and reading
Qwen2.5-VL-7B's states (3584 wide). The positions differ from FLUX's only in what the
pipeline passes: text tokens at (0, i, i), image patches at (1, 512 + row, 512 + column)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, nn

from .dit_layers import TimestepEmbedding
from .flux import FluxTransformer2DModel
from .layers import Place
from .step_cache import BranchCache

__all__ = ["LongCatImageTransformer2DModel"]

_DEFAULTS: dict[str, Any] = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38,
    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 3584,
    "pooled_projection_dim": 3584, "axes_dims_rope": (16, 56, 56),
}


class LongCatImageTimestepEmbeddings(nn.Module):
    """temb (B, dim) of timesteps (already x1000): their 256-wide sinusoid through
    `timestep_embedder`. diffusers: `LongCatImageTimestepEmbeddings` (Timesteps(256,
    flip_sin_to_cos=True, downscale_freq_shift=0), then TimestepEmbedding)."""

    def __init__(self, dim: int, place: Place) -> None:
        self.dtype = place["dtype"]
        self.timestep_embedder = TimestepEmbedding(256, dim, place)

    def forward(self, timestep: Any, device: Device) -> Tensor:
        """timestep: (B,) host numbers, or a float32 Tensor (what a captured step passes)."""
        if not isinstance(timestep, Tensor):
            timestep = np.asarray(timestep, np.float32).reshape(-1)
        return self.timestep_embedder(nn.timestep_embedding(
            timestep, 256, flip_sin_to_cos=True, downscale_freq_shift=0, dtype=self.dtype,
            device=device))


class LongCatImageTransformer2DModel(FluxTransformer2DModel):
    """Packed latents (B, L, in_channels) -> the flow (B, L, in_channels).

    Config: `transformer/config.json` of a LongCat-Image folder (diffusers'
    LongCatImageTransformer2DModel fields). Parameter names are diffusers'
    (`time_embed.timestep_embedder.linear_1.weight`, `transformer_blocks.0.attn.to_q.weight`,
    `single_transformer_blocks.0.proj_mlp.weight`, ...). diffusers:
    `LongCatImageTransformer2DModel(hidden_states, encoder_hidden_states, timestep, img_ids,
    txt_ids).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["patch_size"] != 1:
            raise ValueError(f"LongCat-Image's transformer reads packed latents (patch_size "
                             f"1), got patch_size {cfg['patch_size']}")
        # diffusers' config has no out_channels (the output is as wide as the input) and no
        # guidance embedding
        super().__init__({**cfg, "out_channels": None, "guidance_embeds": False}, dtype=dtype,
                         device=device)

    def conditioning(self, dim: int, cfg: dict[str, Any], place: Place) -> None:
        """The timestep's embedder alone (`time_embed`)."""
        self.time_embed = LongCatImageTimestepEmbeddings(dim, place)

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor,  # type: ignore[override]
                timestep: Any, img_ids: Any = None, txt_ids: Any = None, *,
                rotary: tuple[Tensor, Tensor] | None = None,
                cache: BranchCache | None = None) -> Tensor:
        """hidden_states (B, Li, in_channels): packed latents; encoder_hidden_states
        (B, Lt, joint_attention_dim): Qwen2.5-VL's states of the padded prompt, every token
        attended to; timestep (B,) in [0, 1] (sigmas), host numbers or a float32 Tensor;
        img_ids (Li, 3), txt_ids (Lt, 3) positions, or their tables precomputed once per
        picture size by `rotary` (the ids are then unused). `cache`: a step cache branch
        the blocks run through, its calls in step order."""
        temb = self.time_embed(self._thousandfold(timestep), self.x_embedder.weight.device)
        tables = rotary if rotary is not None else self.rotary(txt_ids, img_ids)
        return self.denoise(hidden_states, encoder_hidden_states, temb, tables, cache=cache)
