"""The SkyReels V2 transformer (Skywork's Wan 2.1-based video models; diffusers'
SkyReelsV2Transformer3DModel): Wan 2.1's transformer (models.wan) with, for the diffusion
forcing models, a timestep per latent frame, an fps embedding added to the time projection
(`inject_sample_info`) and block-causal self-attention over `num_frame_per_block` frames.
The text- and image-to-video models are Wan 2.1's network under another name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, nn

from .layers import Place
from .wan import WanTransformer3DModel

__all__ = ["SkyReelsV2Transformer3DModel", "fps_index"]


def fps_index(fps: int) -> int:
    """The fps embedding's row for a video of `fps` frames per second: 0 at 16, 1 otherwise
    (SkyReels V2 was trained at 16 and 24). diffusers: the diffusion forcing pipelines'
    `fps_embeds`."""
    return 0 if fps == 16 else 1


class _FpsProjection(nn.Module):
    """net.0.proj (Linear dim -> dim) and SiLU, net.2 (Linear dim -> 6 dim). diffusers:
    `FeedForward(dim, 6 * dim, mult=1, activation_fn="linear-silu")`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.net = nn.ModuleList([_LinearSilu(dim, place), nn.Identity(),
                                  nn.Linear(dim, 6 * dim, **place)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](self.net[0](x))


class _LinearSilu(nn.Module):
    """proj, SiLU. diffusers: `LinearActivation(activation="silu")`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.proj = nn.Linear(dim, dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        return nn.silu(self.proj(x))


class SkyReelsV2Transformer3DModel(WanTransformer3DModel):
    """Latent video (B, in_channels, F, H, W), timesteps and UMT5 states -> the flow.

    Config: `transformer/config.json` of a SkyReels V2 diffusers folder: Wan 2.1's fields,
    `inject_sample_info` (the fps embedding: `fps_embedding.weight` (2, dim),
    `fps_projection.net.0.proj`, `fps_projection.net.2`) and `num_frame_per_block` (latent
    frames per causal block of the self-attention; 1: no causal mask). diffusers:
    `SkyReelsV2Transformer3DModel(hidden_states, timestep, encoder_hidden_states,
    enable_diffusion_forcing=, fps=).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        super().__init__(config, dtype=dtype, device=device)
        self.config = {"inject_sample_info": False, "num_frame_per_block": 1, **self.config}
        if self.config["inject_sample_info"]:
            place: Place = {"dtype": dtype, "device": device}
            dim = self.config["num_attention_heads"] * self.config["attention_head_dim"]
            self.fps_embedding = nn.Embedding(2, dim, **place)
            self.fps_projection = _FpsProjection(dim, place)

    def forward(self, hidden_states: Tensor, timestep: Any, encoder_hidden_states: Tensor,
                *, fps: Sequence[int] | None = None, causal_block_size: int | None = None,
                **kwargs: Any) -> Tensor:
        """As `WanTransformer3DModel.forward` (timestep (B,) or (B, F) one per latent frame:
        diffusers' `enable_diffusion_forcing=True`); `fps`: one `fps_index` per video, read
        by models with `inject_sample_info` (a model without it refuses it);
        `causal_block_size`: latent frames per causal block, the config's
        `num_frame_per_block` when None (diffusers: `_set_ar_attention`), F a multiple."""
        block = causal_block_size or self.config["num_frame_per_block"]
        frames = hidden_states.shape[2] // self.patch[0]
        if block > 1 and frames % block:
            raise ValueError(f"{frames} latent frames are not a multiple of the causal block "
                             f"size {block}; give a frame count whose latent frames divide "
                             "into whole blocks")
        time_add = None
        if fps is not None:
            if not self.config["inject_sample_info"]:
                raise ValueError("this SkyReels V2 transformer reads no fps (no "
                                 "inject_sample_info: a text- or image-to-video model)")
            rows = np.asarray(fps, np.int64).reshape(-1)
            time_add = self.fps_projection(self.fps_embedding(rows)).reshape(len(rows), 6, -1)
        elif self.config["inject_sample_info"]:
            raise ValueError("this SkyReels V2 transformer reads the video's fps "
                             "(inject_sample_info): give fps")
        return super().forward(hidden_states, timestep, encoder_hidden_states,
                               time_add=time_add, causal_frames=block if block > 1 else None,
                               **kwargs)
