"""The Helios transformer's blocks and rotary tables (models.helios): Wan's block with the
history tokens (the already generated frames, compressed) in front of the noisy chunk's;
the cross-attention reads the text for the chunk's tokens only, the self-attention may
amplify the history's keys, and the rotary tables of the compressed history are the
full-resolution tables averaged over each compressed patch. diffusers:
`HeliosTransformerBlock`, `HeliosAttention`, `HeliosRotaryPosEmbed`."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, take_slice

from .dit_layers import Rope
from .layers import Place
from .transformer_ops import gated_add, kept, modulate, rope
from .wan_blocks import Segment, WanAttention, WanTransformerBlock, by_segment, chunks, joined

__all__ = ["HeliosAttention", "HeliosTransformerBlock", "pooled_rope", "replicate_pad"]

# diffusers' HeliosAttention: amplified history keys are scaled by 1 + sigmoid(p) x (10 - 1)
_MAX_KEY_SCALE = 10.0


def pooled_rope(frames: np.ndarray, rows: int, columns: int, axes: tuple[int, int, int],
                theta: float, pool: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin (L, D) of the patches at `frames` x rows x columns, each table averaged over
    pool x pool x pool cells after replicating the last frame / row / column up to a multiple
    of `pool` (1: the plain tables). diffusers: `HeliosRotaryPosEmbed` then `pad_for_3d_conv`
    and `center_down_sample_3d` (the cos and sin averaged, not the angles)."""
    grid = np.meshgrid(np.asarray(frames, np.float64), np.arange(rows, dtype=np.float64),
                       np.arange(columns, dtype=np.float64), indexing="ij")
    angles = []
    for pos, dim in zip(grid, axes):
        freqs = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64)[: dim // 2] / dim)
        angles.append(np.repeat(pos[..., None] * freqs, 2, axis=-1))
    angle = np.concatenate(angles, axis=-1)  # (T, H, W, D)
    tables = []
    for table in (np.cos(angle), np.sin(angle)):
        pad = [(0, -n % pool) for n in table.shape[:3]] + [(0, 0)]
        table = np.pad(table, pad, mode="edge")
        t, h, w, d = table.shape
        table = table.reshape(t // pool, pool, h // pool, pool, w // pool, pool, d)
        tables.append(table.mean(axis=(1, 3, 5)).reshape(-1, d))
    return tables[0], tables[1]


def replicate_pad(x: Tensor, multiples: tuple[int, int, int]) -> Tensor:
    """x (B, C, F, H, W) with its last frame, row and column repeated up to multiples of
    `multiples`. torch: `F.pad(x, ..., mode="replicate")` at the end of each axis
    (diffusers' `pad_for_3d_conv`)."""
    for axis, multiple in zip((2, 3, 4), multiples):
        size = x.shape[axis]
        extra = -size % multiple
        if extra:
            last = take_slice(x, size - 1, size, axis=axis)
            x = concatenate([x] + [last] * extra, axis=axis)
    return x


class HeliosAttention(WanAttention):
    """Wan's attention; with `amplify` (self-attention of `is_amplify_history`) the keys of
    the history tokens (the first `history`) scaled by 1 + sigmoid(history_key_scale) x 9,
    one scale per head ("per_head") or one for all ("scalar"), after the norms and rope.
    diffusers: `HeliosAttention` with `HeliosAttnProcessor`."""

    def __init__(self, dim: int, heads: int, eps: float, place: Place,
                 amplify: str | None = None) -> None:
        super().__init__(dim, heads, eps, place)
        self.amplify = amplify
        if amplify is not None:
            count = heads if amplify == "per_head" else 1
            self.history_key_scale = nn.parameter((count,), place["dtype"], place["device"])
            self._tables: dict[Any, Tensor] = {}

    def key_scale(self, width: int, device: Device) -> Tensor:
        """(width,) the history keys' scale of each feature, kept on the device."""
        def make() -> Tensor:
            p = self.history_key_scale.numpy().astype(np.float64)
            scale = 1 + (1 / (1 + np.exp(-p))) * (_MAX_KEY_SCALE - 1)
            per = np.repeat(scale, width // self.heads) if scale.size > 1 else \
                np.full(width, scale[0])
            return asarray(per.astype(np.float32), dtype=self.to_q.weight.dtype,
                           device=device)
        return kept(self._tables, (width, device), make)

    def attend(self, x: Tensor, rotary: Rope, history: int) -> Tensor:
        """Self-attention of x (B, L, dim) whose first `history` tokens are the history."""
        if self.amplify is None or history == 0:
            return self(x, rotary=rotary)
        q, k, v = nn.Linear.each(x, [self.to_q, self.to_k, self.to_v])
        q, k = self.norm_q(q), self.norm_k(k)
        if rotary is not None:
            q, k = rope(q, *rotary, self.heads), rope(k, *rotary, self.heads)
        length, width = k.shape[1], k.shape[2]
        k = concatenate([take_slice(k, 0, history, axis=1) * self.key_scale(width, k.device),
                         take_slice(k, history, length, axis=1)], axis=1)
        return self.to_out[0](nn.attention(q, k, v, heads=self.heads))


class HeliosTransformerBlock(WanTransformerBlock):
    """Wan's block over [history, chunk] tokens: modulated self-attention over all of them
    (history keys amplified where configured), the cross-attention to the text on the
    chunk's tokens only (`guidance_cross_attn`, else on all), the modulated feed-forward.
    diffusers: `HeliosTransformerBlock`."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        super().__init__({**cfg, "added_kv_proj_dim": None}, place)
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        self.attn1: HeliosAttention = HeliosAttention(
            dim, cfg["num_attention_heads"], cfg["eps"], place,
            cfg["history_scale_mode"] if cfg["is_amplify_history"] else None)
        self.guidance_cross_attn = bool(cfg["guidance_cross_attn"])

    def forward(self, x: Tensor, context: Tensor, segments: list[Segment],  # type: ignore[override]
                rotary: Rope, history: int = 0) -> Tensor:
        """x (B, history + chunk tokens, dim), context (B, Lt, dim); `segments` cover x's
        tokens in order (the history's with timestep 0, the chunk's with its own)."""
        mods = [chunks(self.scale_shift_table + projection, 6) for _, _, projection in segments]
        # 1. modulated self-attention over history and chunk, gated residual
        normed = nn.layer_norm(x, None, None, eps=self.eps)
        attn = self.attn1.attend(joined([modulate(part, m[0], m[1]) for part, m in
                                         zip(by_segment(normed, segments), mods)]),
                                 rotary, history)
        x = joined([gated_add(part, m[2], out) for part, out, m in
                    zip(by_segment(x, segments), by_segment(attn, segments), mods)])
        # 2. cross-attention to the text (the chunk's tokens only: guidance_cross_attn)
        split = history if self.guidance_cross_attn else 0
        now = take_slice(x, split, x.shape[1], axis=1) if split else x
        normed = self.norm2(now) if self.norm2 is not None else now
        now = now + self.attn2(normed, context)
        x = concatenate([take_slice(x, 0, split, axis=1), now], axis=1) if split else now
        # 3. modulated feed-forward, gated residual
        normed = nn.layer_norm(x, None, None, eps=self.eps)
        ff = self.ffn(joined([modulate(part, m[3], m[4]) for part, m in
                              zip(by_segment(normed, segments), mods)]))
        return joined([gated_add(part, m[5], out) for part, out, m in
                       zip(by_segment(x, segments), by_segment(ff, segments), mods)])

