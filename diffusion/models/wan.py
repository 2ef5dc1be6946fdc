"""The Wan 2.1 text-to-video transformer (diffusers' WanTransformer3DModel names): latent video
cut into (1, 2, 2) patches, a stack of blocks each with self-attention over all patches (3D
rotary positions: frame, row, column), cross-attention to the UMT5 prompt, and a gelu-tanh
feed-forward, all three modulated by one time embedding through each block's learned
`scale_shift_table` (the blocks: models.wan_blocks; the embedders: models.wan_embeddings).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, nn, permute, take_slice

from .layers import Place, ProjOutPlace
from .step_cache import BranchCache, run_blocks
from .transformer_ops import cast, modulate, rope_tables
from .wan_blocks import Segment, WanTransformerBlock, by_segment, chunks, joined
from .wan_embeddings import PatchEmbedding, WanTimeTextEmbedding

__all__ = ["Hints", "WanStream", "WanTransformer3DModel", "wan_patches", "wan_positions"]

_DEFAULTS: dict[str, Any] = {
    "patch_size": (1, 2, 2), "num_attention_heads": 40, "attention_head_dim": 128,
    "in_channels": 16, "out_channels": 16, "text_dim": 4096, "freq_dim": 256,
    "ffn_dim": 13824, "num_layers": 40, "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": None,
    "added_kv_proj_dim": None, "rope_max_seq_len": 1024, "pos_embed_seq_len": None,
}
_ROPE_THETA = 10000.0


def wan_positions(frames: int, rows: int, columns: int) -> np.ndarray:
    """(frames * rows * columns, 3) rotary positions (frame, row, column) of the patches in
    frame-major, then row-major order. diffusers: `WanRotaryPosEmbed`'s table indices."""
    grid = np.meshgrid(np.arange(frames), np.arange(rows), np.arange(columns), indexing="ij")
    return np.stack(grid, axis=-1).reshape(-1, 3)


def wan_patches(latents: Tensor, patch: tuple[int, int, int]
                ) -> tuple[Tensor, tuple[int, int, int]]:
    """latents (B, C, F, H, W), F, H, W multiples of `patch` -> the patches (B, L, C * pt *
    ph * pw) in frame-major, then row-major order, and the grid (F / pt, H / ph, W / pw).
    torch: `Conv3d(kernel=stride=patch)`'s input windows, `flatten(2).transpose(1, 2)`."""
    batch, channels, frames, height, width = latents.shape
    pt, ph, pw = patch
    if frames % pt or height % ph or width % pw:
        raise ValueError(f"latent video {frames} x {height} x {width} is not a multiple "
                         f"of Wan's patch {patch}")
    grid = (frames // pt, height // ph, width // pw)
    cut = latents.reshape(batch, channels, grid[0], pt, grid[1], ph, grid[2], pw)
    return permute(cut, (0, 2, 4, 6, 1, 3, 5, 7)).reshape(
        batch, math.prod(grid), channels * pt * ph * pw), grid


@dataclass(frozen=True)
class WanStream:
    """What a control branch (VACE: models.wan_vace) reads of one call: `patches` (B, L, dim)
    the embedded latent patches the blocks start from, the text `context` (B, Lt, dim), the
    time `segments` and `rotary` tables the blocks take, the I2V `image` context or None."""

    patches: Tensor
    context: Tensor
    segments: list[Segment]
    rotary: tuple[Tensor, Tensor]
    image: Tensor | None


# a control branch for one call: from the stream, what follows main block i: (i, its output)
# -> the stream the next block takes (VACE adds its hints)
Hints = Callable[[WanStream], Callable[[int, Tensor], Tensor]]


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """(frame, row, column) features of a head: rows and columns 2 (head_dim // 6) each."""
    side = 2 * (head_dim // 6)
    return head_dim - 2 * side, side, side


class WanTransformer3DModel(ProjOutPlace, nn.Module):
    """Latent video (B, in_channels, F, H, W) and UMT5 states (B, Lt, text_dim) -> the flow
    (B, out_channels, F, H, W).

    Config: `transformer/config.json` of a Wan 2.1 text- or image-to-video folder (diffusers'
    fields; I2V's `image_dim` / `added_kv_proj_dim` add the image embedder and the image
    cross-attention; FLF2V's `pos_embed_seq_len` is not supported yet). Parameter
    names are diffusers' (`patch_embedding.weight`, `condition_embedder.time_proj.weight`,
    `blocks.0.attn1.norm_q.weight`, `blocks.0.ffn.net.0.proj.weight`, `scale_shift_table`,
    ...). diffusers: `WanTransformer3DModel(hidden_states, timestep,
    encoder_hidden_states).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["pos_embed_seq_len"] is not None:
            raise ValueError("this Wan transformer reads two pictures (pos_embed_seq_len: Wan "
                             "2.1 first-last-frame-to-video), which is not supported yet; use "
                             "a Wan 2.1 text- or image-to-video model")
        if (cfg["image_dim"] is None) != (cfg["added_kv_proj_dim"] is None):
            raise ValueError("a Wan transformer config sets image_dim and added_kv_proj_dim "
                             "together (image-to-video) or neither")
        if cfg["qk_norm"] != "rms_norm_across_heads":
            raise ValueError(f"Wan qk_norm {cfg['qk_norm']!r} is not supported; this model "
                             "implements 'rms_norm_across_heads'")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        pt, ph, pw = (int(p) for p in cfg["patch_size"])
        self.patch = (pt, ph, pw)
        out_channels = cfg["out_channels"] or cfg["in_channels"]
        self.patch_embedding = PatchEmbedding(cfg["in_channels"], dim, self.patch, place)
        self.condition_embedder = WanTimeTextEmbedding(cfg, dim, place)
        self.blocks = nn.ModuleList([WanTransformerBlock(cfg, place)
                                     for _ in range(cfg["num_layers"])])
        self.proj_out = nn.Linear(dim, out_channels * math.prod(self.patch), **place)
        self.scale_shift_table = nn.parameter((1, 2, dim), **place)

    def rotary(self, frames: int, rows: int, columns: int) -> tuple[Tensor, Tensor]:
        """cos/sin tables of `wan_positions` over `rope_axes` features."""
        limit = self.config["rope_max_seq_len"]
        if max(frames, rows, columns) > limit:
            raise ValueError(f"{frames} x {rows} x {columns} patches pass Wan's {limit} rotary "
                             "positions per axis; make the video smaller or shorter")
        return rope_tables(wan_positions(frames, rows, columns),
                           rope_axes(self.config["attention_head_dim"]), _ROPE_THETA,
                           device=self.device)

    def encode_text(self, states: Tensor) -> Tensor:
        """UMT5 states (B, Lt, text_dim) -> the blocks' context (B, Lt, dim); the same for
        every step (a pipeline computes it once)."""
        return self.condition_embedder.text_embedder(cast(states, self.dtype))

    def segments(self, timestep: Any, frames: int, frame_tokens: int
                 ) -> tuple[list[Segment], list[Tensor]]:
        """The token segments of `timestep` and each one's time embedding (B, dim):
        timestep (B,) one per video, or (B, frames) one per latent frame (frames alike in
        every video merged into one segment). diffusers: the per-token timesteps of
        `expand_timesteps` (Wan 2.2), constant over a frame."""
        steps = np.asarray(timestep, np.float32)
        if steps.ndim == 1:
            temb, projection = self.condition_embedder(steps, self.device)
            return [(0, frames * frame_tokens, projection)], [temb]
        if steps.ndim != 2 or steps.shape[1] != frames:
            raise ValueError(f"timestep must be (batch,) or (batch, {frames} frames), got "
                             f"shape {steps.shape}")
        runs = [0] + [f for f in range(1, frames)
                      if not np.array_equal(steps[:, f], steps[:, f - 1])] + [frames]
        segments, embeddings = [], []
        for start, stop in itertools.pairwise(runs):
            temb, projection = self.condition_embedder(steps[:, start], self.device)
            segments.append((start * frame_tokens, stop * frame_tokens, projection))
            embeddings.append(temb)
        return segments, embeddings

    def encode_image(self, states: Tensor) -> Tensor:
        """CLIP vision states (B, Li, image_dim) -> the image context (B, Li, dim) of Wan 2.1
        I2V's cross-attention; the same for every step."""
        if self.config["image_dim"] is None:
            raise ValueError("this Wan transformer reads no image (no image_dim: a "
                             "text-to-video model)")
        return self.condition_embedder.image_embedder(cast(states, self.dtype))

    def forward(self, hidden_states: Tensor, timestep: Any, encoder_hidden_states: Tensor, *,
                context: Tensor | None = None, encoder_hidden_states_image: Tensor | None = None,
                image_context: Tensor | None = None, cache: BranchCache | None = None,
                control: Hints | None = None, patch_add: Tensor | None = None,
                time_add: Tensor | None = None, causal_frames: int | None = None) -> Tensor:
        """hidden_states (B, C, F, H, W) with F, H, W multiples of patch_size; timestep (B,)
        host numbers on the 0..1000 scale (WanPipeline's `t`), or (B, F / pt) one per latent
        frame (Wan 2.2's image-to-video: 0 for the given first frame); encoder_hidden_states
        (B, Lt, text_dim), or `context` = `encode_text(...)` given instead; Wan 2.1 I2V:
        encoder_hidden_states_image (B, Li, image_dim) CLIP states, or `image_context` =
        `encode_image(...)`. diffusers takes the image states the same way (it concatenates
        them before the text and splits them off again in each block). `cache`: a step cache
        branch (`step_cache.StepCache.branch()`: First Block Cache, TeaCache) the blocks run
        through, its calls in step order. `control`: a control branch (VACE's hints) run
        beside the blocks, each block's output through it. `patch_add` (B, L', dim): added to
        the last L' embedded patches (Wan Animate's pose: every latent frame but the first).
        `time_add` (B, 6, dim): added to every time projection (SkyReels V2's fps embedding);
        `causal_frames`: latent frames per causal block of the self-attention, each block
        seeing itself and those before it (SkyReels V2's diffusion forcing), or None."""
        batch, _, frames, height, width = hidden_states.shape
        pt, ph, pw = self.patch
        # 1. patches (frame-major, row-major) and their embedding; the time and text
        patches, grid = wan_patches(hidden_states, self.patch)
        x = self.patch_embedding(patches)
        if patch_add is not None:
            start = x.shape[1] - patch_add.shape[1]
            x = concatenate([take_slice(x, 0, start, axis=1),
                             take_slice(x, start, x.shape[1], axis=1) + patch_add], axis=1)
        segments, embeddings = self.segments(timestep, grid[0], grid[1] * grid[2])
        if time_add is not None:
            segments = [(start, stop, projection + time_add)
                        for start, stop, projection in segments]
        causal = None if causal_frames is None else causal_frames * grid[1] * grid[2]
        if context is None:
            context = self.encode_text(encoder_hidden_states)
        if image_context is None and encoder_hidden_states_image is not None:
            image_context = self.encode_image(encoder_hidden_states_image)
        if (image_context is None) != (self.config["image_dim"] is None):
            raise ValueError("this Wan transformer reads an image (image-to-video): give its "
                             "CLIP states" if image_context is None else
                             "this Wan transformer reads no image (text-to-video)")
        tables = self.rotary(*grid)
        # 2. the blocks (the first apart: a step cache decides after it whether the others run)
        blocks = list(self.blocks)
        after = None if control is None else control(
            WanStream(x, context, segments, tables, image_context))

        def block(index: int, x: Tensor, text: Tensor) -> Tensor:
            x = blocks[index](x, text, segments, tables, image_context, causal)
            return x if after is None else after(index, x)

        def head(x: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
            return (block(0, x, text) if blocks else x), text

        def tail(x: Tensor, text: Tensor) -> Tensor:
            for index in range(1, len(blocks)):
                x = block(index, x, text)
            return x

        def probe(x: Tensor) -> Tensor:  # TeaCache's measure on Wan: the time embedding
            return embeddings[0]

        x = run_blocks(cache, x, context, head, tail, probe if len(embeddings) == 1 else None)
        # 3. the final modulated norm, projection and the patches put back
        normed = nn.layer_norm(x, None, None, eps=self.config["eps"])
        ends = [chunks(self.scale_shift_table + temb.reshape(batch, 1, -1), 2)
                for temb in embeddings]
        x = self.proj_out(joined([modulate(part, shift, scale) for part, (shift, scale) in
                                  zip(by_segment(normed, segments), ends)]))
        out = x.reshape(batch, *grid, pt, ph, pw, -1)
        out = permute(out, (0, 7, 1, 4, 2, 5, 3, 6))
        return out.reshape(batch, -1, frames, height, width)
