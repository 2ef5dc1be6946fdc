"""The Wan 2.1 text-to-video transformer (diffusers' WanTransformer3DModel names): latent video
cut into (1, 2, 2) patches, a stack of blocks each with self-attention over all patches (3D
rotary positions: frame, row, column), cross-attention to the UMT5 prompt, and a gelu-tanh
feed-forward, all three modulated by one time embedding through each block's learned
`scale_shift_table`.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, nn, permute, take_slice

from .dit_layers import GELU, Rope, TimestepEmbedding
from .layers import Place
from .step_cache import BranchCache, run_blocks
from .transformer_ops import RMSNorm, cast, gated_add, modulate, rope, rope_tables

__all__ = ["WanTransformer3DModel", "wan_positions"]

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


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """(frame, row, column) features of a head: rows and columns 2 (head_dim // 6) each."""
    side = 2 * (head_dim // 6)
    return head_dim - 2 * side, side, side


# A run of tokens [start, stop) and its time projection (B, 6, dim): one covers the whole
# sequence when each video has one timestep; Wan 2.2's image-to-video gives the first frame's
# tokens their own (timestep 0: the given picture).
Segment = tuple[int, int, Tensor]


def _chunks(mods: Tensor, count: int) -> list[Tensor]:
    """(B, count, dim) -> `count` tensors (B, 1, dim)."""
    batch, _, dim = mods.shape
    return [take_slice(mods, i, i + 1, axis=1).reshape(batch, 1, dim) for i in range(count)]


def _split(x: Tensor, segments: list[Segment]) -> list[Tensor]:
    """x (B, L, D) cut along its tokens as `segments` are (x itself for one)."""
    if len(segments) == 1:
        return [x]
    return [take_slice(x, start, stop, axis=1) for start, stop, _ in segments]


def _joined(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else concatenate(parts, axis=1)


class WanAttention(nn.Module):
    """to_q/to_k/to_v/to_out.0 with RMS norms of q and k across all heads (norm_q, norm_k);
    self-attention with rotary positions, or cross-attention to `context`; with `added_kv`
    (Wan 2.1 I2V's cross-attention) also to the image tokens through add_k_proj / add_v_proj
    (k RMS-normed by norm_added_k), the two attentions summed. diffusers: `WanAttention`."""

    def __init__(self, dim: int, heads: int, eps: float, place: Place,
                 added_kv: int | None = None) -> None:
        self.heads = heads
        if added_kv is not None:
            self.add_k_proj = nn.Linear(added_kv, dim, **place)
            self.add_v_proj = nn.Linear(added_kv, dim, **place)
            self.norm_added_k = RMSNorm(dim, eps, place=place)
        self.to_q = nn.Linear(dim, dim, **place)
        self.to_k = nn.Linear(dim, dim, **place)
        self.to_v = nn.Linear(dim, dim, **place)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, **place)])
        self.norm_q = RMSNorm(dim, eps, place=place)
        self.norm_k = RMSNorm(dim, eps, place=place)

    def forward(self, x: Tensor, context: Tensor | None = None, rotary: Rope = None,
                image: Tensor | None = None) -> Tensor:
        source = x if context is None else context
        q = self.norm_q(self.to_q(x))
        k = self.norm_k(self.to_k(source))
        v = self.to_v(source)
        if rotary is not None:
            q = rope(q, *rotary, self.heads)
            k = rope(k, *rotary, self.heads)
        out = nn.attention(q, k, v, heads=self.heads)
        if image is not None:
            out = out + nn.attention(q, self.norm_added_k(self.add_k_proj(image)),
                                     self.add_v_proj(image), heads=self.heads)
        return self.to_out[0](out)


class FeedForward(nn.Module):
    """net.0 (Linear + tanh GELU), net.2 (Linear). diffusers: `FeedForward(dim,
    inner_dim=ffn_dim, activation_fn="gelu-approximate")`."""

    def __init__(self, dim: int, inner: int, place: Place) -> None:
        self.net = nn.ModuleList([GELU(dim, inner, place), nn.Identity(),
                                  nn.Linear(inner, dim, **place)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](self.net[0](x))


class WanTransformerBlock(nn.Module):
    """Modulated self-attention, (normed) cross-attention to the text, modulated
    feed-forward; shift, scale, gate of each from `scale_shift_table` + the time
    projection. diffusers: `WanTransformerBlock`."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        self.eps = cfg["eps"]
        self.attn1 = WanAttention(dim, cfg["num_attention_heads"], cfg["eps"], place)
        self.attn2 = WanAttention(dim, cfg["num_attention_heads"], cfg["eps"], place,
                                  cfg["added_kv_proj_dim"])
        self.norm2 = (nn.LayerNorm(dim, cfg["eps"], **place) if cfg["cross_attn_norm"]
                      else None)
        self.ffn = FeedForward(dim, cfg["ffn_dim"], place)
        self.scale_shift_table = nn.parameter((1, 6, dim), **place)

    def forward(self, x: Tensor, context: Tensor, segments: list[Segment],
                rotary: Rope, image: Tensor | None = None) -> Tensor:
        """x (B, L, dim), context (B, Lt, dim), image (B, Li, dim) or None; `segments` cover
        x's tokens in order."""
        # 1. the six modulations of each segment: the block's table plus its time projection
        mods = [_chunks(self.scale_shift_table + projection, 6) for _, _, projection in segments]
        # 2. modulated self-attention, gated residual
        normed = nn.layer_norm(x, None, None, eps=self.eps)
        attn = self.attn1(_joined([modulate(part, m[0], m[1]) for part, m in
                                   zip(_split(normed, segments), mods)]), rotary=rotary)
        x = _joined([gated_add(part, m[2], out) for part, out, m in
                     zip(_split(x, segments), _split(attn, segments), mods)])
        # 3. cross-attention to the text, plain residual
        normed = self.norm2(x) if self.norm2 is not None else x
        x = x + self.attn2(normed, context, image=image)
        # 4. modulated feed-forward, gated residual
        normed = nn.layer_norm(x, None, None, eps=self.eps)
        ff = self.ffn(_joined([modulate(part, m[3], m[4]) for part, m in
                               zip(_split(normed, segments), mods)]))
        return _joined([gated_add(part, m[5], out) for part, out, m in
                        zip(_split(x, segments), _split(ff, segments), mods)])


class TextProjection(nn.Module):
    """linear_1, tanh GELU, linear_2. diffusers: `PixArtAlphaTextProjection(act_fn=
    "gelu_tanh")`."""

    def __init__(self, in_dim: int, dim: int, place: Place) -> None:
        self.linear_1 = nn.Linear(in_dim, dim, **place)
        self.linear_2 = nn.Linear(dim, dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(nn.gelu(self.linear_1(x), approximate="tanh"))


class ImageEmbedding(nn.Module):
    """CLIP image states (B, Li, image_dim) -> (B, Li, dim): norm1, ff (Linear, exact GELU,
    Linear), norm2. diffusers: `WanImageEmbedding` (without FLF2V's pos_embed)."""

    def __init__(self, in_dim: int, dim: int, place: Place) -> None:
        self.norm1 = nn.LayerNorm(in_dim, **place)
        self.ff = _GeluFeedForward(in_dim, dim, place)
        self.norm2 = nn.LayerNorm(dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm2(self.ff(self.norm1(x)))


class _ExactGELU(nn.Module):
    """proj, exact GELU. diffusers: `GELU(approximate="none")`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.proj = nn.Linear(dim, dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        return nn.gelu(self.proj(x))


class _GeluFeedForward(nn.Module):
    """net.0.proj, exact GELU, net.2. diffusers: `FeedForward(in, out, mult=1,
    activation_fn="gelu")`."""

    def __init__(self, in_dim: int, dim: int, place: Place) -> None:
        self.net = nn.ModuleList([_ExactGELU(in_dim, place), nn.Identity(),
                                  nn.Linear(in_dim, dim, **place)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](self.net[0](x))


class WanTimeTextEmbedding(nn.Module):
    """timestep -> (temb (B, dim), its projection (B, 6, dim)); text states -> (B, Lt, dim);
    Wan 2.1 I2V's CLIP image states -> (B, Li, dim) (`image_embedder`). diffusers:
    `WanTimeTextImageEmbedding`."""

    def __init__(self, cfg: dict[str, Any], dim: int, place: Place) -> None:
        self.dtype, self.freq_dim = place["dtype"], cfg["freq_dim"]
        self.time_embedder = TimestepEmbedding(cfg["freq_dim"], dim, place)
        self.time_proj = nn.Linear(dim, 6 * dim, **place)
        self.text_embedder = TextProjection(cfg["text_dim"], dim, place)
        if cfg["image_dim"] is not None:
            self.image_embedder = ImageEmbedding(cfg["image_dim"], dim, place)

    def forward(self, timestep: Any, device: Device) -> tuple[Tensor, Tensor]:
        t = np.asarray(timestep, np.float32).reshape(-1)
        features = nn.timestep_embedding(t, self.freq_dim, flip_sin_to_cos=True,
                                         downscale_freq_shift=0, dtype=self.dtype,
                                         device=device)
        temb = self.time_embedder(features)
        projection = self.time_proj(nn.silu(temb))
        return temb, projection.reshape(t.shape[0], 6, -1)


class PatchEmbedding(nn.Module):
    """A Conv3d whose kernel equals its stride: each (pt, ph, pw) patch of every channel,
    times weight (dim, C, pt, ph, pw), plus bias. torch: `nn.Conv3d(C, dim, p, stride=p)`."""

    def __init__(self, in_channels: int, dim: int, patch: tuple[int, int, int],
                 place: Place) -> None:
        self.weight = nn.parameter((dim, in_channels, *patch), place["dtype"], place["device"])
        self.bias = nn.parameter((dim,), place["dtype"], place["device"])

    def forward(self, patches: Tensor) -> Tensor:
        """patches (B, L, C * pt * ph * pw) -> (B, L, dim)."""
        dim = self.weight.shape[0]
        return nn.linear(patches, self.weight.reshape(dim, -1), self.bias)


class WanTransformer3DModel(nn.Module):
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

    @property
    def device(self) -> Device:
        return self.proj_out.weight.device

    @property
    def dtype(self) -> np.dtype:
        return self.proj_out.weight.dtype

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
                image_context: Tensor | None = None, cache: BranchCache | None = None) -> Tensor:
        """hidden_states (B, C, F, H, W) with F, H, W multiples of patch_size; timestep (B,)
        host numbers on the 0..1000 scale (WanPipeline's `t`), or (B, F / pt) one per latent
        frame (Wan 2.2's image-to-video: 0 for the given first frame); encoder_hidden_states
        (B, Lt, text_dim), or `context` = `encode_text(...)` given instead; Wan 2.1 I2V:
        encoder_hidden_states_image (B, Li, image_dim) CLIP states, or `image_context` =
        `encode_image(...)`. diffusers takes the image states the same way (it concatenates
        them before the text and splits them off again in each block). `cache`: a step cache
        branch (`step_cache.StepCache.branch()`: First Block Cache, TeaCache) the blocks run
        through, its calls in step order."""
        batch, channels, frames, height, width = hidden_states.shape
        pt, ph, pw = self.patch
        if frames % pt or height % ph or width % pw:
            raise ValueError(f"latent video {frames} x {height} x {width} is not a multiple "
                             f"of Wan's patch {self.patch}")
        grid = (frames // pt, height // ph, width // pw)
        # 1. patches (frame-major, row-major) and their embedding; the time and text
        cut = hidden_states.reshape(batch, channels, grid[0], pt, grid[1], ph, grid[2], pw)
        patches = permute(cut, (0, 2, 4, 6, 1, 3, 5, 7)).reshape(
            batch, math.prod(grid), channels * pt * ph * pw)
        x = self.patch_embedding(patches)
        segments, embeddings = self.segments(timestep, grid[0], grid[1] * grid[2])
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

        def head(x: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
            return (blocks[0](x, text, segments, tables, image_context) if blocks else x), text

        def tail(x: Tensor, text: Tensor) -> Tensor:
            for block in blocks[1:]:
                x = block(x, text, segments, tables, image_context)
            return x

        def probe(x: Tensor) -> Tensor:  # TeaCache's measure on Wan: the time embedding
            return embeddings[0]

        x = run_blocks(cache, x, context, head, tail, probe if len(embeddings) == 1 else None)
        # 3. the final modulated norm, projection and the patches put back
        normed = nn.layer_norm(x, None, None, eps=self.config["eps"])
        ends = [_chunks(self.scale_shift_table + temb.reshape(batch, 1, -1), 2)
                for temb in embeddings]
        x = self.proj_out(_joined([modulate(part, shift, scale) for part, (shift, scale) in
                                   zip(_split(normed, segments), ends)]))
        out = x.reshape(batch, *grid, pt, ph, pw, -1)
        out = permute(out, (0, 7, 1, 4, 2, 5, 3, 6))
        return out.reshape(batch, -1, frames, height, width)
