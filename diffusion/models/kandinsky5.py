"""The Kandinsky 5 transformer (diffusers' Kandinsky5Transformer3DModel names): latents in
(1, 2, 2) patches through `visual_transformer_blocks` (self-attention over the patches with 3D
rotary positions (frame, row, column), cross-attention to the text, feed-forward), the prompt's
Qwen2.5-VL states through `text_transformer_blocks` first (self-attention with 1D rotary
positions, feed-forward). Every block is modulated by one vector: the timestep's sinusoid
embedding plus the CLIP pooled vector's (`pooled_text_embeddings`).

The text blocks read that vector, so they run every step; only `text_embeddings` (the
states' projection and LayerNorm) is the prompt's alone and runs once (`text`). Pictures are
one latent frame (diffusers' Kandinsky5T2IPipeline); a video is several, the same code.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, nn, permute

from .kandinsky5_blocks import (
    LAYER_NORM_EPS,
    Kandinsky5OutLayer,
    Kandinsky5TransformerDecoderBlock,
    Kandinsky5TransformerEncoderBlock,
)
from .layers import Place
from .step_cache import BranchCache, run_blocks
from .transformer_ops import cast, kept, rope_tables

__all__ = ["Kandinsky5Transformer3DModel"]

_DEFAULTS: dict[str, Any] = {
    "in_visual_dim": 4, "in_text_dim": 3584, "in_text_dim2": 768, "time_dim": 512,
    "out_visual_dim": 4, "patch_size": (1, 2, 2), "model_dim": 2048, "ff_dim": 5120,
    "num_text_blocks": 2, "num_visual_blocks": 32, "axes_dims": (16, 24, 24),
    "visual_cond": False, "attention_type": "regular",
}
_THETA = 10000.0
_MAX_TEXT, _MAX_VISUAL = 1024, 128  # diffusers' rotary tables' lengths (RoPE1D, RoPE3D)


class Kandinsky5TimeEmbeddings(nn.Module):
    """out_layer(silu(in_layer([cos, sin] of t))), the sinusoid model_dim wide. diffusers:
    `Kandinsky5TimeEmbeddings`."""

    def __init__(self, dim: int, time_dim: int, place: Place) -> None:
        self.dtype, self.dim = place["dtype"], dim
        self.in_layer = nn.Linear(dim, time_dim, **place)
        self.out_layer = nn.Linear(time_dim, time_dim, **place)

    def forward(self, t: Any, device: Device) -> Tensor:
        """t (1,) float32 on the 0..1000 scale, host or a Tensor -> (1, time_dim)."""
        features = nn.timestep_embedding(t, self.dim, flip_sin_to_cos=True,
                                         downscale_freq_shift=0, dtype=self.dtype,
                                         device=device)
        return self.out_layer(nn.silu(self.in_layer(features)))


class Kandinsky5TextEmbeddings(nn.Module):
    """norm(in_layer(x)), an affine LayerNorm. diffusers: `Kandinsky5TextEmbeddings` (the
    prompt's states and the pooled vector both)."""

    def __init__(self, in_dim: int, dim: int, place: Place) -> None:
        self.in_layer = nn.Linear(in_dim, dim, **place)
        self.norm = nn.LayerNorm(dim, LAYER_NORM_EPS, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.in_layer(x))


class Kandinsky5VisualEmbeddings(nn.Module):
    """in_layer of each patch's (pt, ph, pw, channel) values flattened. diffusers:
    `Kandinsky5VisualEmbeddings`."""

    def __init__(self, in_dim: int, dim: int, place: Place) -> None:
        self.in_layer = nn.Linear(in_dim, dim, **place)

    def forward(self, patches: Tensor) -> Tensor:
        return self.in_layer(patches)


class Kandinsky5Transformer3DModel(nn.Module):
    """A prompt's states, its pooled vector and channels-last latents -> the velocity, in two
    calls: `text(states)` once per prompt, then `forward(latents, timestep, text, pooled)`
    every step.

    Config: `transformer/config.json` of a Kandinsky 5 folder (diffusers' fields; sparse
    `attention_type` "nabla" is refused). Parameter names are diffusers'
    (`time_embeddings.in_layer.weight`, `text_embeddings.norm.weight`,
    `pooled_text_embeddings.in_layer.weight`, `visual_embeddings.in_layer.weight`,
    `text_transformer_blocks.0.text_modulation.out_layer.weight`,
    `visual_transformer_blocks.0.cross_attention.query_norm.weight`,
    `out_layer.modulation.out_layer.weight`, `out_layer.out_layer.weight`, ...). diffusers:
    `Kandinsky5Transformer3DModel(latents, states, timestep, pooled, visual_rope_pos,
    text_rope_pos, scale_factor).sample` with arange positions, as its pipelines pass them.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["attention_type"] != "regular":
            raise ValueError(f"Kandinsky 5 attention_type {cfg['attention_type']!r} (sparse "
                             "NABLA attention) is not supported; use a model of 'regular' "
                             "attention")
        dim, head_dim = cfg["model_dim"], sum(cfg["axes_dims"])
        if dim % head_dim:
            raise ValueError(f"model_dim {dim} is not a multiple of the head size "
                             f"{head_dim} (the sum of axes_dims {tuple(cfg['axes_dims'])})")
        self.config = cfg
        self.patch = tuple(int(p) for p in cfg["patch_size"])
        channels = cfg["in_visual_dim"]
        self.visual_channels = 2 * channels + 1 if cfg["visual_cond"] else channels
        place: Place = {"dtype": dtype, "device": device}
        time_dim, ff_dim = cfg["time_dim"], cfg["ff_dim"]
        self.time_embeddings = Kandinsky5TimeEmbeddings(dim, time_dim, place)
        self.text_embeddings = Kandinsky5TextEmbeddings(cfg["in_text_dim"], dim, place)
        self.pooled_text_embeddings = Kandinsky5TextEmbeddings(cfg["in_text_dim2"], time_dim,
                                                               place)
        self.visual_embeddings = Kandinsky5VisualEmbeddings(
            math.prod(self.patch) * self.visual_channels, dim, place)
        sizes = (dim, time_dim, ff_dim, head_dim, place)
        self.text_transformer_blocks = nn.ModuleList(
            [Kandinsky5TransformerEncoderBlock(*sizes) for _ in range(cfg["num_text_blocks"])])
        self.visual_transformer_blocks = nn.ModuleList(
            [Kandinsky5TransformerDecoderBlock(*sizes)
             for _ in range(cfg["num_visual_blocks"])])
        self.out_layer = Kandinsky5OutLayer(
            dim, time_dim, math.prod(self.patch) * cfg["out_visual_dim"], place)
        self._tables: dict[Any, Any] = {}  # rotary tables per size (transformer_ops.kept)

    @property
    def device(self) -> Device:
        return self.visual_embeddings.in_layer.weight.device

    @property
    def dtype(self) -> np.dtype:
        return self.visual_embeddings.in_layer.weight.dtype

    def text(self, states: Any) -> Tensor:
        """The prompt's tokens every step reads: states (1, L, in_text_dim), the Qwen2.5-VL
        hidden states after the template (a Tensor or an array) -> (1, L, model_dim) in the
        model's dtype. diffusers: the transformer's `text_embeddings`."""
        wanted = self.config["in_text_dim"]
        shape = tuple(states.shape)
        if len(shape) != 3 or shape[0] != 1 or shape[2] != wanted or not shape[1]:
            raise ValueError(f"states must be (1, tokens, {wanted}) (one prompt's hidden "
                             f"states), got {shape}")
        if shape[1] > _MAX_TEXT:
            raise ValueError(f"{shape[1]} text tokens pass Kandinsky 5's {_MAX_TEXT} rotary "
                             "positions; shorten the prompt")
        return self.text_embeddings(asarray(states, dtype=self.dtype, device=self.device))

    def _rotary(self, text: int, grid: tuple[int, int, int],
                scale: tuple[float, float, float]) -> tuple[tuple[Tensor, Tensor], ...]:
        """cos/sin of the text's positions 0..L-1 over a whole head, and of the patches'
        (frame, row, column) / scale_factor over axes_dims; kept per size."""
        def make() -> tuple[tuple[Tensor, Tensor], ...]:
            axes = tuple(self.config["axes_dims"])
            ids = np.stack(np.meshgrid(*(np.arange(n) for n in grid), indexing="ij"), -1)
            positions = ids.reshape(-1, 3) / np.asarray(scale, np.float32)
            return (rope_tables(np.arange(text).reshape(-1, 1), (sum(axes),), _THETA,
                                device=self.device),
                    rope_tables(positions, axes, _THETA, device=self.device))
        return kept(self._tables, (text, grid, scale, self.device), make, count=8)

    def _patches(self, latents: Any) -> tuple[Tensor, tuple[int, int, int]]:
        """(1, F, H, W, C) -> the embedded patches (1, N, model_dim), frame-major then
        row-major, and the patch grid."""
        shape = tuple(latents.shape)
        pt, ph, pw = self.patch
        channels = self.visual_channels
        if len(shape) != 5 or shape[0] != 1 or shape[4] != channels \
                or shape[1] % pt or shape[2] % ph or shape[3] % pw:
            cond = " (the latents, the condition and its mask: visual_cond)" \
                if self.config["visual_cond"] else ""
            raise ValueError(f"latents must be (1, frames, height, width, {channels}){cond}, "
                             f"channels last, frames/height/width multiples of the patch "
                             f"{self.patch}; got {shape}")
        grid = (shape[1] // pt, shape[2] // ph, shape[3] // pw)
        if max(grid) > _MAX_VISUAL:
            raise ValueError(f"{grid[0]} x {grid[1]} x {grid[2]} patches pass Kandinsky 5's "
                             f"{_MAX_VISUAL} rotary positions per axis; make the picture "
                             "smaller")
        x = asarray(latents, dtype=self.dtype, device=self.device)
        cut = x.reshape(1, grid[0], pt, grid[1], ph, grid[2], pw, channels)
        patches = permute(cut, (0, 1, 3, 5, 2, 4, 6, 7)).reshape(1, math.prod(grid), -1)
        return self.visual_embeddings(patches), grid

    def forward(self, latents: Any, timestep: Any, text: Tensor, pooled: Any, *,
                scale_factor: tuple[float, float, float] = (1.0, 1.0, 1.0),
                cache: BranchCache | None = None) -> Tensor:
        """latents (1, F, H, W, C): the pipeline's channels-last layout, F = 1 for a picture
        (C = in_visual_dim, or 2 * in_visual_dim + 1 for a visual_cond model: the pipeline's
        concatenation); timestep: the scheduler's t on the 0..1000 scale, host or a float32
        Tensor (rounded to the model's dtype as diffusers' pipeline rounds it); text:
        `text()`'s tokens; pooled
        (1, in_text_dim2): the CLIP pooled vector -> the velocity (1, F, H, W,
        out_visual_dim) in the model's dtype. `scale_factor`: the rotary positions' divisors
        (frame, row, column): (1, 1, 1) for pictures, the video pipeline's
        `_get_scale_factor` for videos. `cache`: a step cache branch
        (`step_cache.StepCache.branch()`) the visual blocks run through, its calls in step
        order."""
        dim = self.config["model_dim"]
        if not isinstance(text, Tensor) or text.ndim != 3 or text.shape[0] != 1 \
                or text.shape[2] != dim:
            raise ValueError(f"text must be this model's text() tokens (1, L, {dim}), got "
                             f"{getattr(text, 'shape', type(text).__name__)}")
        width = self.config["in_text_dim2"]
        if tuple(pooled.shape) != (1, width):
            raise ValueError(f"pooled must be (1, {width}) (the CLIP pooled vector), got "
                             f"{tuple(pooled.shape)}")
        t: Any
        if isinstance(timestep, Tensor):  # a replayed step's, rounded on the device alike
            if timestep.dtype != np.float32:
                raise TypeError(f"a timestep Tensor must be float32, got {timestep.dtype}")
            t = timestep.reshape(-1)
            if self.dtype != np.float32:
                t = cast(cast(t, self.dtype), np.float32)
        else:
            t = np.asarray(timestep, self.dtype).reshape(-1).astype(np.float32)
        if tuple(t.shape) != (1,):
            raise ValueError(f"timestep must be one number for the one picture, got "
                             f"{t.shape[0]}")
        scale = tuple(float(s) for s in scale_factor)
        if len(scale) != 3:
            raise ValueError(f"scale_factor must be 3 numbers (frame, row, column), got "
                             f"{scale_factor}")
        # 1. the modulations' input, made once for every block: silu(time + pooled)
        x, grid = self._patches(latents)
        pooled_embed = self.pooled_text_embeddings(asarray(pooled, dtype=self.dtype,
                                                           device=self.device))
        activated = nn.silu(self.time_embeddings(t, self.device) + pooled_embed)
        text_rotary, visual_rotary = self._rotary(text.shape[1], grid, scale)
        # 2. the text blocks (modulated by the time: every step)
        for block in self.text_transformer_blocks:
            text = block(text, activated, text_rotary)
        blocks = list(self.visual_transformer_blocks)

        def head(x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
            return (blocks[0](x, context, activated, visual_rotary) if blocks else x), context

        def tail(x: Tensor, context: Tensor) -> Tensor:
            for block in blocks[1:]:
                x = block(x, context, activated, visual_rotary)
            return x

        # 3. the visual blocks (the first apart: a step cache decides after it whether the
        # others run); 4. the output layer and the patches put back, channels last
        x = self.out_layer(run_blocks(cache, x, text, head, tail), activated)
        pt, ph, pw = self.patch
        out = permute(x.reshape(1, *grid, -1, pt, ph, pw), (0, 1, 5, 2, 6, 3, 7, 4))
        return out.reshape(1, grid[0] * pt, grid[1] * ph, grid[2] * pw, -1)
