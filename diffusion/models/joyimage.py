"""The JoyImage Edit transformer (diffusers' JoyImageEditTransformer3DModel names, and
JoyImageEditPlusTransformer3DModel's, the same): HunyuanVideo's double-stream blocks (each
stream's fused QKV, per-head RMS norms of q and k, one attention over the image tokens then
the text's, a tanh-GELU feed-forward) modulated Wan's way (each block's learned
`modulate_table` plus the timestep's projection gives shift, scale and gate), over (1, 2, 2)
latent patches of the picture being drawn then of its reference pictures (the Plus model's of
sizes of their own), each part's frames after the previous part's; 3D rotary positions
(frame, row, column) turn adjacent pairs of the image's q and k (with `rope_type` "mrope" the
text's too, at positions past the largest image index); the output a plain LayerNorm and
projection (no final modulation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, take_slice

from .dit_layers import TimestepEmbedding
from .layers import Place
from .transformer_ops import (
    RMSNorm,
    cast,
    gated_add,
    joint_norm_rope,
    kept,
    norm_modulate,
    rope_tables,
)
from .wan_blocks import FeedForward, chunks
from .wan_embeddings import PatchEmbedding, TextProjection

__all__ = ["JoyImageEditTransformer3DModel", "patchify", "unpatchify"]

_DEFAULTS: dict[str, Any] = dict(
    patch_size=(1, 2, 2), in_channels=16, out_channels=None, hidden_size=3072,
    num_attention_heads=24, text_dim=4096, mlp_width_ratio=4.0, num_layers=20,
    rope_dim_list=(16, 56, 56), rope_type="rope", theta=256)
_EPS = 1e-6


def patchify(latents: np.ndarray, patch: tuple[int, int, int]) -> np.ndarray:
    """(B, C, T, H, W) -> (B, T/pt * H/ph * W/pw, C * pt * ph * pw) tokens, frame-major, each
    patch channel-major as the Conv3d's weight reads it. torch: `img_in`'s input unfolded."""
    b, c, t, h, w = latents.shape
    pt, ph, pw = patch
    x = latents.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw)
    return x.transpose(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, -1, c * pt * ph * pw)


def unpatchify(tokens: np.ndarray, grid: tuple[int, int, int], patch: tuple[int, int, int]
               ) -> np.ndarray:
    """proj_out's (B, t * h * w, pt * ph * pw * C) -> (B, C, t pt, h ph, w pw), each patch
    channel-last. diffusers: `JoyImageEditTransformer3DModel.unpatchify`."""
    (t, h, w), (pt, ph, pw) = grid, patch
    b = tokens.shape[0]
    x = tokens.reshape(b, t, h, w, pt, ph, pw, -1)
    return x.transpose(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, -1, t * pt, h * ph, w * pw)


class JoyImageModulate(nn.Module):
    """The block's (1, 6, dim) `modulate_table` plus the timestep projection (B, 6, dim):
    shift, scale, gate of the attention, then of the feed-forward, each (B, 1, dim).
    diffusers: `JoyImageModulate`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.modulate_table = nn.parameter((1, 6, dim), **place)

    def forward(self, projection: Tensor) -> list[Tensor]:
        return chunks(self.modulate_table + projection, 6)


class JoyImageAttention(nn.Module):
    """img_attn_qkv / txt_attn_qkv (fused), per-head RMS norms, one attention over the image
    tokens then the text's, img_attn_proj / txt_attn_proj. diffusers: `JoyImageAttention`."""

    def __init__(self, dim: int, heads: int, place: Place) -> None:
        self.heads, head_dim = heads, dim // heads
        self.img_attn_qkv = nn.Linear(dim, 3 * dim, **place)
        self.img_attn_q_norm = RMSNorm(head_dim, _EPS, place=place)
        self.img_attn_k_norm = RMSNorm(head_dim, _EPS, place=place)
        self.img_attn_proj = nn.Linear(dim, dim, **place)
        self.txt_attn_qkv = nn.Linear(dim, 3 * dim, **place)
        self.txt_attn_q_norm = RMSNorm(head_dim, _EPS, place=place)
        self.txt_attn_k_norm = RMSNorm(head_dim, _EPS, place=place)
        self.txt_attn_proj = nn.Linear(dim, dim, **place)

    def forward(self, img: Tensor, txt: Tensor, rotary: tuple[Tensor, Tensor]
                ) -> tuple[Tensor, Tensor]:
        """rotary: tables over the image tokens then the text's (the text's the identity
        unless the model turns it)."""
        dim = img.shape[2]
        iq, ik, iv = (take_slice(self.img_attn_qkv(img), i * dim, (i + 1) * dim, axis=2)
                      for i in range(3))
        tq, tk, tv = (take_slice(self.txt_attn_qkv(txt), i * dim, (i + 1) * dim, axis=2)
                      for i in range(3))
        q = joint_norm_rope([(self.img_attn_q_norm, iq), (self.txt_attn_q_norm, tq)],
                            rotary, self.heads)
        k = joint_norm_rope([(self.img_attn_k_norm, ik), (self.txt_attn_k_norm, tk)],
                            rotary, self.heads)
        out = nn.attention(q, k, concatenate([iv, tv], axis=1), heads=self.heads)
        count = img.shape[1]
        return (self.img_attn_proj(take_slice(out, 0, count, axis=1)),
                self.txt_attn_proj(take_slice(out, count, out.shape[1], axis=1)))


class JoyImageTransformerBlock(nn.Module):
    """Each stream: x + gate * attention(LN(x) (1 + scale) + shift), then the same around its
    feed-forward. diffusers: `JoyImageTransformerBlock`."""

    def __init__(self, dim: int, heads: int, inner: int, place: Place) -> None:
        self.img_mod = JoyImageModulate(dim, place)
        self.txt_mod = JoyImageModulate(dim, place)
        self.img_mlp = FeedForward(dim, inner, place)
        self.txt_mlp = FeedForward(dim, inner, place)
        self.attn = JoyImageAttention(dim, heads, place)

    def forward(self, img: Tensor, txt: Tensor, projection: Tensor,
                rotary: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        im, tm = self.img_mod(projection), self.txt_mod(projection)
        img_attn, txt_attn = self.attn(norm_modulate(img, im[0], im[1], _EPS),
                                       norm_modulate(txt, tm[0], tm[1], _EPS), rotary)
        img, txt = gated_add(img, im[2], img_attn), gated_add(txt, tm[2], txt_attn)
        img = gated_add(img, im[5], self.img_mlp(norm_modulate(img, im[3], im[4], _EPS)))
        txt = gated_add(txt, tm[5], self.txt_mlp(norm_modulate(txt, tm[3], tm[4], _EPS)))
        return img, txt


class JoyImageTimeTextEmbedding(nn.Module):
    """timestep -> its projection (B, 6, dim); the prompt's states -> (B, L, dim). diffusers:
    `JoyImageTimeTextImageEmbedding` (Wan's, without the image embedder)."""

    def __init__(self, dim: int, text_dim: int, place: Place) -> None:
        self.dtype = place["dtype"]
        self.time_embedder = TimestepEmbedding(256, dim, place)
        self.time_proj = nn.Linear(dim, 6 * dim, **place)
        self.text_embedder = TextProjection(text_dim, dim, place)

    def forward(self, timestep: np.ndarray, device: Device) -> Tensor:
        features = nn.timestep_embedding(timestep, 256, flip_sin_to_cos=True,
                                         downscale_freq_shift=0, dtype=self.dtype,
                                         device=device)
        projection = self.time_proj(nn.silu(self.time_embedder(features)))
        return projection.reshape(len(timestep), 6, -1)


class JoyImageEditTransformer3DModel(nn.Module):
    """Latents of the picture being drawn and its reference pictures, frames of one (B, C, T,
    H, W) (the drawn picture first), and the prompt's states -> the velocity (B, C, T, H, W)
    float32. diffusers: `JoyImageEditTransformer3DModel(hidden_states, timestep,
    encoder_hidden_states)` on its 5D input (its 6D items (B, N, ...) are these frames with
    the last item moved first).

    Config: `transformer/config.json` of a JoyImage Edit folder. Parameter names are
    diffusers' (`img_in.weight`, `condition_embedder.time_embedder.linear_1.weight`,
    `condition_embedder.text_embedder.linear_1.weight`, `double_blocks.0.img_mod.
    modulate_table`, `double_blocks.0.attn.img_attn_qkv.weight`, `double_blocks.0.img_mlp.
    net.0.proj.weight`, `proj_out.weight`, ...)."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        dim, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        cfg["patch_size"] = tuple(cfg["patch_size"])
        cfg["out_channels"] = cfg["out_channels"] or cfg["in_channels"]
        if dim % heads or len(cfg["rope_dim_list"]) != 3 \
                or sum(cfg["rope_dim_list"]) != dim // heads:
            raise ValueError(f"rope_dim_list {list(cfg['rope_dim_list'])} must be 3 sizes "
                             f"adding up to the head width {dim} / {heads}")
        if cfg["rope_type"] not in ("rope", "mrope") or len(cfg["patch_size"]) != 3:
            raise ValueError(f"rope_type {cfg['rope_type']!r} / patch_size "
                             f"{list(cfg['patch_size'])}: JoyImage's are 'rope' or 'mrope' "
                             "and 3 sizes")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        self.img_in = PatchEmbedding(cfg["in_channels"], dim, cfg["patch_size"], place)
        self.condition_embedder = JoyImageTimeTextEmbedding(dim, cfg["text_dim"], place)
        inner = int(dim * cfg["mlp_width_ratio"])
        self.double_blocks = nn.ModuleList([JoyImageTransformerBlock(dim, heads, inner, place)
                                            for _ in range(cfg["num_layers"])])
        volume = int(np.prod(cfg["patch_size"]))
        self.proj_out = nn.Linear(dim, cfg["out_channels"] * volume, **place)
        self._tables: dict[Any, Any] = {}

    @property
    def device(self) -> Device:
        return self.proj_out.weight.device

    @property
    def dtype(self) -> np.dtype:
        return self.proj_out.weight.dtype

    def rotary(self, grids: tuple[tuple[int, int, int], ...], text: int
               ) -> tuple[Tensor, Tensor]:
        """cos/sin (patches + text, 1, head) over each part's patches at (frame, row, column),
        its frames after the parts' before it, then the text's tokens: the identity for them
        ("rope"), or each at 1 + the largest index + i on all three axes ("mrope").
        diffusers: `get_rotary_pos_embed` (one part), the Plus model's
        `_get_rotary_pos_embed_for_range` per part. Kept on the device."""
        return kept(self._tables, (grids, text, self.device), lambda: self._rotary(grids, text))

    def _rotary(self, grids: tuple[tuple[int, int, int], ...], text: int
                ) -> tuple[Tensor, Tensor]:
        parts, offset = [], 0
        for frames, rows, columns in grids:
            ids = np.stack(np.meshgrid(np.arange(offset, offset + frames), np.arange(rows),
                                       np.arange(columns), indexing="ij"), -1)
            parts.append(ids.reshape(-1, 3))
            offset += frames
        ids = np.concatenate(parts)
        if self.config["rope_type"] == "mrope":
            ids = np.concatenate([ids, np.repeat(np.arange(text)[:, None] + ids.max() + 1, 3, 1)])
        cos, sin = (t.numpy() for t in rope_tables(ids, tuple(self.config["rope_dim_list"]),
                                                   float(self.config["theta"]),
                                                   device=self.device))
        if self.config["rope_type"] == "rope":
            width = cos.shape[2]
            cos = np.concatenate([cos, np.ones((text, 1, width), np.float32)])
            sin = np.concatenate([sin, np.zeros((text, 1, width), np.float32)])
        return asarray(cos, device=self.device), asarray(sin, device=self.device)

    def prepare_text(self, states: Any) -> Tensor:
        """The prompt's states (B, L, text_dim) through text_embedder, once per prompt."""
        weight = self.condition_embedder.text_embedder.linear_1.weight
        return self.condition_embedder.text_embedder(
            asarray(states, dtype=weight.dtype, device=weight.device))

    def forward(self, parts: Sequence[np.ndarray], timestep: Any, text: Tensor
                ) -> list[np.ndarray]:
        """parts: latents (B, C, T, H, W) host float32 each, the drawn picture's first then
        the references' (sizes of their own), their patches one sequence; timestep (B,) the
        scheduler's (0..1000); text: `prepare_text`'s (B, L, dim). Returns each part's
        velocity (B, C, T, H, W) float32."""
        patch = self.config["patch_size"]
        grids, tokens = [], []
        for latents in parts:
            _, c, frames, height, width = latents.shape
            if c != self.config["in_channels"] or any(s % p for s, p in zip(
                    (frames, height, width), patch)):
                raise ValueError(f"latents of shape {latents.shape} do not fit {patch} patches "
                                 f"of {self.config['in_channels']} channels")
            grids.append((frames // patch[0], height // patch[1], width // patch[2]))
            tokens.append(patchify(latents, patch))
        img = self.img_in(asarray(np.concatenate(tokens, axis=1), dtype=self.dtype,
                                  device=self.device))
        b = img.shape[0]
        t = np.asarray(timestep, np.float32).reshape(-1)
        projection = self.condition_embedder(np.broadcast_to(t, (b,)).copy(), self.device)
        rotary = self.rotary(tuple(grids), text.shape[1])
        txt = cast(text, self.dtype)
        for block in self.double_blocks:
            img, txt = block(img, txt, projection, rotary)
        out = self.proj_out(nn.layer_norm(img, None, None, eps=_EPS)).numpy().astype(np.float32)
        bounds = np.cumsum([0] + [int(np.prod(g)) for g in grids])
        return [unpatchify(out[:, start:stop], grid, patch)
                for start, stop, grid in zip(bounds[:-1], bounds[1:], grids)]
