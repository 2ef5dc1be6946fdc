"""NVIDIA Cosmos Predict2 / Predict2.5's transformer (diffusers' CosmosTransformer3DModel
names): the latent video with the pipelines' mask channels cut into (1, 2, 2) patches, a
stack of blocks each with self-attention over all patches (3D rotary positions, NTK-scaled
per axis), cross-attention to the prompt states and an exact-GELU feed-forward, all three
modulated through adaLN-LoRA by the time embedding (the blocks: models.cosmos_blocks).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, permute, zeros

from .cosmos_blocks import AdaLayerNorm, CosmosBlock, CosmosTimeEmbedding, Mods
from .layers import Place, ProjOutPlace
from .transformer_ops import cast, kept, norm_modulate
from .wan import wan_patches
from .wan_blocks import Segment, by_segment, joined

__all__ = ["CosmosTransformer3DModel", "cosmos_rotary"]

_DEFAULTS: dict[str, Any] = {
    "in_channels": 16, "out_channels": 16, "num_attention_heads": 32,
    "attention_head_dim": 128, "num_layers": 28, "mlp_ratio": 4.0, "text_embed_dim": 1024,
    "adaln_lora_dim": 256, "max_size": (128, 240, 240), "patch_size": (1, 2, 2),
    "rope_scale": (2.0, 1.0, 1.0), "concat_padding_mask": True,
    "extra_pos_embed_type": "learnable", "use_crossattn_projection": False,
    "crossattn_proj_in_channels": 1024, "encoder_hidden_states_channels": 1024,
    "img_context_dim_in": None,
}
_BASE_FPS = 24  # diffusers' CosmosRotaryPosEmbed base_fps


def cosmos_rotary(grid: tuple[int, int, int], head_dim: int, rope_scale: Any,
                  fps: float | None) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin (T * H * W, 1, head_dim) float32 of the patches' rotary angles: frame, row,
    column features (the rows and columns 2 (head_dim // 6) each), theta 10000 times each
    axis's NTK factor scale^(d / (d - 2)), the frame positions times 24 / fps for a video
    (fps None: a picture); the angles run over the first half of a head, then repeat.
    diffusers: `CosmosRotaryPosEmbed(head_dim, rope_scale=...)(x, fps)`."""
    dim_h = dim_w = head_dim // 6 * 2
    dim_t = head_dim - dim_h - dim_w
    angles = []
    for axis, (size, dim, scale) in enumerate(zip(grid, (dim_t, dim_h, dim_w), rope_scale)):
        theta = 10000.0 * float(scale) ** (dim / (dim - 2))
        freqs = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64)[: dim // 2] / dim)
        pos = np.arange(size, dtype=np.float64)
        if axis == 0 and fps is not None:
            pos = pos / fps * _BASE_FPS
        shape = [1, 1, 1, dim // 2]
        shape[axis] = size
        angle = np.outer(pos, freqs).reshape(shape)
        angles.append(np.broadcast_to(angle, (*grid, dim // 2)))
    half = np.concatenate(angles, axis=-1).reshape(math.prod(grid), 1, head_dim // 2)
    angle = np.concatenate([half, half], axis=-1)
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


class CosmosTransformer3DModel(ProjOutPlace, nn.Module):
    """Latent video (B, C, F, H, W) and prompt states (B, Lt, D) -> the network's output
    (B, out_channels, F, H, W) (the pipelines turn it into a denoised estimate or a flow).

    Config: `transformer/config.json` of a Cosmos Predict2 (Text2Image, Video2World) or
    Predict2.5 folder, diffusers' fields; Cosmos 1.0's learnable positions and the image
    context of other Cosmos models are refused. Parameter names are diffusers'
    (`patch_embed.proj.weight`, `time_embed.t_embedder.linear_1.weight`,
    `transformer_blocks.0.norm1.linear_1.weight`, `transformer_blocks.0.attn1.norm_q.weight`,
    `transformer_blocks.0.ff.net.0.proj.weight`, `norm_out.linear_2.weight`, ...).
    diffusers: `CosmosTransformer3DModel(hidden_states, timestep, encoder_hidden_states,
    fps=, condition_mask=, padding_mask=zeros).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["extra_pos_embed_type"] is not None:
            raise ValueError("this Cosmos transformer adds learnable positions (Cosmos 1.0), "
                             "which is not supported; use a Cosmos Predict2 or Predict2.5 model")
        if cfg["img_context_dim_in"]:
            raise ValueError("this Cosmos transformer reads an image context "
                             "(img_context_dim_in), which is not supported; use a Cosmos "
                             "Predict2 or Predict2.5 model")
        pt, ph, pw = (int(p) for p in cfg["patch_size"])
        self.patch = (pt, ph, pw)
        if self.patch[0] != 1:
            raise ValueError(f"Cosmos patch_size {self.patch} is not supported; this model "
                             "implements patches one latent frame deep")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        heads, head_dim = cfg["num_attention_heads"], cfg["attention_head_dim"]
        dim = heads * head_dim
        self.channels_in = cfg["in_channels"] + int(bool(cfg["concat_padding_mask"]))
        self.patch_embed = _PatchEmbed(self.channels_in * math.prod(self.patch), dim, place)
        self.time_embed = CosmosTimeEmbedding(dim, place)
        self.transformer_blocks = nn.ModuleList([CosmosBlock(cfg, place)
                                                 for _ in range(cfg["num_layers"])])
        self.norm_out = AdaLayerNorm(dim, cfg["adaln_lora_dim"], 2, place)
        self.proj_out = nn.Linear(dim, math.prod(self.patch) * cfg["out_channels"], False,
                                  **place)
        if cfg["use_crossattn_projection"]:
            self.crossattn_proj = nn.ModuleList([nn.Linear(
                cfg["crossattn_proj_in_channels"], cfg["encoder_hidden_states_channels"],
                **place)])
        self._tables: dict[Any, tuple[Tensor, Tensor]] = {}

    def rotary(self, grid: tuple[int, int, int], fps: float | None) -> tuple[Tensor, Tensor]:
        """cosmos_rotary's tables for this model, kept on the device between calls."""
        limit = [size // patch for size, patch in zip(self.config["max_size"], self.patch)]
        if any(g > max(limit) for g in grid):
            raise ValueError(f"{grid[0]} x {grid[1]} x {grid[2]} patches pass Cosmos' "
                             f"{max(limit)} rotary positions per axis; make the picture or "
                             "video smaller or shorter")

        def make() -> tuple[Tensor, Tensor]:
            cos, sin = cosmos_rotary(grid, self.config["attention_head_dim"],
                                     self.config["rope_scale"], fps)
            return asarray(cos, device=self.device), asarray(sin, device=self.device)

        return kept(self._tables, (grid, fps, self.device), make)

    def encode_text(self, states: Tensor) -> Tensor:
        """Prompt states -> the blocks' context: as given, or through crossattn_proj (Linear,
        exact GELU: Predict2.5's projection of its stacked Qwen2.5-VL layers); the same for
        every step (a pipeline computes it once)."""
        states = cast(states, self.dtype)
        if not self.config["use_crossattn_projection"]:
            return states
        return self.crossattn_proj[0].gelu(states)

    def segments(self, timestep: Any, frames: int, frame_tokens: int
                 ) -> tuple[list[Segment], list[Mods]]:
        """The token segments of `timestep` and each one's modulation input (silu(embedded
        timestep), temb): timestep (B,) one per video, or (B, frames) one per latent frame
        (frames alike in every video merged into one segment). diffusers: timestep (B,) or
        (B, 1, F, 1, 1); a float32 Tensor (a replayed step's) must be (B,)."""
        if isinstance(timestep, Tensor):  # one segment: no run to find on the host
            if timestep.ndim != 1:
                raise ValueError(f"a timestep Tensor must be (batch,), got {timestep.shape}")
            temb, embedded = self.time_embed(timestep, self.device)
            activated = nn.silu(embedded)
            return [(0, frames * frame_tokens, activated)], [(activated, temb)]
        steps = np.asarray(timestep, np.float32)
        if steps.ndim == 1:
            runs = [0, frames]
        elif steps.ndim == 2 and steps.shape[1] == frames:
            runs = [0] + [f for f in range(1, frames)
                          if not np.array_equal(steps[:, f], steps[:, f - 1])] + [frames]
        else:
            raise ValueError(f"timestep must be (batch,) or (batch, {frames} frames), got "
                             f"shape {steps.shape}")
        segments: list[Segment] = []
        mods: list[Mods] = []
        for start, stop in itertools.pairwise(runs):
            temb, embedded = self.time_embed(steps if steps.ndim == 1 else steps[:, start],
                                             self.device)
            activated = nn.silu(embedded)
            segments.append((start * frame_tokens, stop * frame_tokens, activated))
            mods.append((activated, temb))
        return segments, mods

    def forward(self, hidden_states: Tensor, timestep: Any,
                encoder_hidden_states: Tensor | None = None, *, context: Tensor | None = None,
                fps: float | None = None, condition_mask: Tensor | None = None) -> Tensor:
        """hidden_states (B, C, F, H, W), H and W even; timestep (B,) host numbers (the
        pipelines' t: sigma / (sigma + 1) for Predict2, sigma for 2.5), or (B, F) one per
        latent frame (the conditioning frames' own); encoder_hidden_states (B, Lt, D), or
        `context` = `encode_text(...)` given instead; fps: a video's frame rate (None: a
        picture); condition_mask (B, 1, F, H, W): the conditioning frames' channel of
        Video2World and Predict2.5 models. The padding mask diffusers' pipelines give is all
        zeros: its channel is zeros here."""
        batch, _, frames, height, width = hidden_states.shape
        parts = [cast(hidden_states, self.dtype)]
        if condition_mask is not None:
            parts.append(cast(condition_mask, self.dtype))
        if self.config["concat_padding_mask"]:
            parts.append(zeros((batch, 1, frames, height, width), self.dtype,
                               device=self.device))
        x = concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        if x.shape[1] != self.channels_in:
            given = x.shape[1] - self.channels_in + self.config["in_channels"]
            raise ValueError(f"this Cosmos transformer reads {self.config['in_channels']} "
                             "channels (the latents, and the condition mask for Video2World "
                             f"and Predict2.5), got {given}")
        patches, grid = wan_patches(x, self.patch)
        x = self.patch_embed(patches)
        segments, mods = self.segments(timestep, grid[0], grid[1] * grid[2])
        if context is None:
            if encoder_hidden_states is None:
                raise ValueError("give the prompt states (encoder_hidden_states) or context")
            context = self.encode_text(encoder_hidden_states)
        tables = self.rotary(grid, fps)
        for block in self.transformer_blocks:
            x = block(x, context, segments, mods, tables)
        ends = [self.norm_out(*mod) for mod in mods]
        x = self.proj_out(joined([norm_modulate(part, m[0], m[1]) for part, m in
                                  zip(by_segment(x, segments), ends)]))
        pt, ph, pw = self.patch
        # the features are (row, column, frame, channel) within a patch
        out = permute(x.reshape(batch, *grid, ph, pw, pt, -1), (0, 7, 1, 6, 2, 4, 3, 5))
        return out.reshape(batch, -1, frames, height, width)


class _PatchEmbed(nn.Module):
    """proj: each patch's (channel, frame, row, column) features to the width, no bias.
    diffusers: `CosmosPatchEmbed`."""

    def __init__(self, features: int, dim: int, place: Place) -> None:
        self.proj = nn.Linear(features, dim, False, **place)

    def forward(self, patches: Tensor) -> Tensor:
        return self.proj(patches)
