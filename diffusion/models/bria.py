"""The Bria 3.2 transformer (diffusers' BriaTransformer2DModel names): FLUX.1's double- and
single-stream blocks, rotary embedding and output head as they are, conditioned on the
timestep alone (`time_embed`: no pooled text, no guidance embedding) and reading T5-XXL's
states (4096 wide). It differs from FLUX's in what it is given: the scheduler's timestep
itself (0 .. 1000, not a sigma scaled back up), its sinusoid's period `time_theta` and the
rotary embedding's `rope_theta` from the config."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, nn

from .dit_layers import TimestepEmbedding
from .flux import FluxTransformer2DModel
from .layers import Place
from .step_cache import BranchCache
from .transformer_ops import cast, rope_tables

__all__ = ["BriaTransformer2DModel"]

_DEFAULTS: dict[str, Any] = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38,
    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
    "axes_dims_rope": (16, 56, 56), "rope_theta": 10000, "time_theta": 10000,
}


class BriaTimestepProjEmbeddings(nn.Module):
    """temb (B, dim) of timesteps (0 .. 1000): their 256-wide sinusoid of period
    `time_theta` through `timestep_embedder`. diffusers: `BriaTimestepProjEmbeddings`
    (BriaTimesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0, time_theta), then
    TimestepEmbedding)."""

    def __init__(self, dim: int, time_theta: float, place: Place) -> None:
        self.dtype, self.time_theta = place["dtype"], float(time_theta)
        self.timestep_embedder = TimestepEmbedding(256, dim, place)

    def forward(self, timestep: Any, device: Device) -> Tensor:
        """timestep: (B,) host numbers or a float32 Tensor (what a captured step passes),
        rounded to the model's dtype first as diffusers' `timestep.to(hidden_states.dtype)`."""
        dtype = np.dtype(self.dtype)
        if isinstance(timestep, Tensor):
            if timestep.dtype != np.float32:
                raise TypeError(f"timestep Tensors must be float32, got {timestep.dtype}")
            timestep = timestep.reshape(-1)
            if dtype != np.float32:
                timestep = cast(cast(timestep, dtype), np.float32)
        else:
            timestep = np.asarray(timestep, dtype).reshape(-1).astype(np.float32)
        return self.timestep_embedder(nn.timestep_embedding(
            timestep, 256, flip_sin_to_cos=True, downscale_freq_shift=0,
            max_period=self.time_theta, dtype=self.dtype, device=device))


class BriaTransformer2DModel(FluxTransformer2DModel):
    """Packed latents (B, L, in_channels) -> the flow (B, L, in_channels).

    Config: `transformer/config.json` of a Bria 3.2 folder (diffusers'
    BriaTransformer2DModel fields). Parameter names are diffusers'
    (`time_embed.timestep_embedder.linear_1.weight`, `transformer_blocks.0.attn.to_q.weight`,
    `single_transformer_blocks.0.proj_mlp.weight`, ...). diffusers:
    `BriaTransformer2DModel(hidden_states, encoder_hidden_states, timestep=, img_ids=,
    txt_ids=).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["patch_size"] != 1:
            raise ValueError(f"Bria's transformer reads packed latents (patch_size 1), got "
                             f"patch_size {cfg['patch_size']}")
        if cfg.get("guidance_embeds"):
            raise ValueError("this Bria transformer embeds a guidance scale, which Bria 3.2 "
                             "does not: give a BriaPipeline folder of Bria 3.x")
        # the output is as wide as the input; no pooled text
        super().__init__({**cfg, "out_channels": None, "guidance_embeds": False,
                          "pooled_projection_dim": None}, dtype=dtype, device=device)

    def conditioning(self, dim: int, cfg: dict[str, Any], place: Place) -> None:
        """The timestep's embedder alone (`time_embed`)."""
        self.time_embed = BriaTimestepProjEmbeddings(dim, cfg["time_theta"], place)

    def rotary(self, txt_ids: Any, img_ids: Any) -> tuple[Tensor, Tensor]:
        """cos/sin tables for text then image positions (zeros for text, (0, row, column)
        for image patches, as BriaPipeline makes them), of period `rope_theta`."""
        ids = np.concatenate([np.asarray(txt_ids), np.asarray(img_ids)])
        return rope_tables(ids, tuple(self.config["axes_dims_rope"]),
                           float(self.config["rope_theta"]),
                           device=self.x_embedder.weight.device)

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor,  # type: ignore[override]
                timestep: Any, img_ids: Any = None, txt_ids: Any = None, *,
                rotary: tuple[Tensor, Tensor] | None = None,
                cache: BranchCache | None = None) -> Tensor:
        """hidden_states (B, Li, in_channels): packed latents; encoder_hidden_states
        (B, Lt, joint_attention_dim): T5's states of the prompt, zero-padded; timestep (B,)
        the scheduler's (0 .. 1000), host numbers or a float32 Tensor; img_ids (Li, 3),
        txt_ids (Lt, 3) positions, or their tables precomputed once per picture size by
        `rotary` (the ids are then unused). `cache`: a step cache branch the blocks run
        through, its calls in step order."""
        temb = self.time_embed(timestep, self.x_embedder.weight.device)
        tables = rotary if rotary is not None else self.rotary(txt_ids, img_ids)
        return self.denoise(hidden_states, encoder_hidden_states, temb, tables, cache=cache)
