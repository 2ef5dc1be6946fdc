"""The Bria FIBO 2 transformer (diffusers' BriaFibo2Transformer2DModel names): Z-Image's
sandwich-normed, tanh-gated single-stream blocks (models.z_image_blocks) over one sequence of
[gist tokens, image patches, context patches]. A Perceiver squeezes the text encoder's first
bundle of states into 4..512 gist tokens (the count grows with the prompt's length); five of
the blocks ("injection" blocks) also cross-attend to a bundle of their own, behind a learned
tanh gate. The image tokens are modulated by the step's timestep, the gist and context tokens
by t = 0 (clean): diffusers' per-token `noise_mask`. 3-axis rotary positions: gist token i at
(1 + i, 0, 0), the image at (max_num_gist_tokens + 1, row, column), context picture k one plane
further each. Patches are 2x2 latents, features in (channel, dy, dx) order.

One picture a call, its text unpadded: what diffusers' batch with its masks computes.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, nn, permute, take_slice

from .layers import Place
from .transformer_ops import Modulation, RMSNorm, cast, norm_rope
from .z_image import FinalLayer, TimestepEmbedder, ZImageTransformer2DModel
from .z_image_blocks import (
    ADALN,
    CleanModulation,
    ZImageAttention,
    ZImageFeedForward,
    ZImageTransformerBlock,
    _gated,
    _picked_gated_add,
    _picked_scaled,
)

__all__ = ["BriaFibo2Transformer2DModel", "gist_count", "patchify", "unpatchify"]

_DEFAULTS: dict[str, Any] = {
    "in_channels": 32, "patch_size": 2, "dim": 3584, "n_layers": 44, "n_refiner_layers": 2,
    "n_heads": 28, "norm_eps": 1e-5, "cap_feat_dim": 7680,
    "injection_layer_ids": (6, 14, 22, 30, 38), "perceiver_num_layers": 2,
    "min_num_gist_tokens": 256, "max_num_gist_tokens": 512, "gist_step": 64,
    "gist_min_text_len": 256, "gist_max_text_len": 2048, "rope_theta": 256.0,
    "t_scale": 1000.0, "axes_dims": (32, 48, 48), "axes_lens": (2048, 512, 512),
}


def gist_count(text_length: int, cfg: dict[str, Any]) -> int:
    """The gist tokens of a prompt `text_length` tokens long: the length mapped linearly from
    [gist_min_text_len, gist_max_text_len] onto [min, max]_num_gist_tokens, rounded up to a
    multiple of gist_step. diffusers: `compute_gist_count([text_length], ...)[0]`."""
    low, high = cfg["min_num_gist_tokens"], cfg["max_num_gist_tokens"]
    span = cfg["gist_max_text_len"] - cfg["gist_min_text_len"]
    ratio = min(1.0, max(0.0, (float(text_length) - cfg["gist_min_text_len"]) / span))
    raw = low + ratio * (high - low)
    return int(max(low, min(high, math.ceil(raw / cfg["gist_step"]) * cfg["gist_step"])))


def patchify(latents: Tensor, p: int) -> Tensor:
    """(1, C, H, W) -> (1, H/p * W/p, C * p * p): row-major patches, each (C, dy, dx)
    flattened. diffusers: BriaFibo2Transformer2DModel._patchify."""
    batch, channels, height, width = latents.shape
    patches = permute(latents.reshape(batch, channels, height // p, p, width // p, p),
                      (0, 2, 4, 1, 3, 5))
    return patches.reshape(batch, (height // p) * (width // p), -1)


def unpatchify(tokens: Tensor, p: int, height: int, width: int) -> Tensor:
    """patchify's inverse: (1, H/p * W/p, C * p * p) -> (1, C, H, W)."""
    batch, _, features = tokens.shape
    channels = features // (p * p)
    out = tokens.reshape(batch, height // p, width // p, channels, p, p)
    return permute(out, (0, 3, 1, 4, 2, 5)).reshape(batch, channels, height, width)


class Fibo2CrossAttention(nn.Module):
    """Queries from the tokens, keys and values from the text states (kv_dim wide), per-head
    RMS norms of q and k, no rotary positions, no biases. diffusers: `BriaFibo2Attention`
    with `encoder_hidden_states`."""

    def __init__(self, dim: int, kv_dim: int, heads: int, eps: float, place: Place) -> None:
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False, **place)
        self.to_k = nn.Linear(kv_dim, dim, bias=False, **place)
        self.to_v = nn.Linear(kv_dim, dim, bias=False, **place)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, bias=False, **place)])
        self.norm_q = RMSNorm(dim // heads, eps, place=place)
        self.norm_k = RMSNorm(dim // heads, eps, place=place)

    def forward(self, x: Tensor, text: Tensor) -> Tensor:
        q = norm_rope(self.norm_q, self.to_q(x), None, self.heads)
        k = norm_rope(self.norm_k, self.to_k(text), None, self.heads)
        return self.to_out[0](nn.attention(q, k, self.to_v(text), heads=self.heads))


class BriaFibo2TransformerBlock(ZImageTransformerBlock):
    """Z-Image's modulated block; an injection block (`cross`) also adds tanh(gate) *
    norm2(cross-attention of norm1(x) to its text bundle) between its attention and its
    feed-forward."""

    def __init__(self, cfg: dict[str, Any], place: Place, *, cross: bool) -> None:
        super().__init__(cfg, place, modulation=True)
        dim, eps = cfg["dim"], cfg["norm_eps"]
        self.attention.norm_q.eps = self.attention.norm_k.eps = eps
        self.cross_attention = None
        if cross:
            self.cross_attn_norm1 = RMSNorm(dim, eps, place=place)
            self.cross_attention = Fibo2CrossAttention(dim, cfg["cap_feat_dim"], cfg["n_heads"],
                                                       eps, place)
            self.cross_attn_norm2 = RMSNorm(dim, eps, place=place)
            self.cross_attn_gate = nn.parameter((1,), **place)

    def joint(self, x: Tensor, rotary: tuple[Tensor, Tensor], temb: Tensor,
              picked: tuple[CleanModulation, Tensor], text: Tensor | None) -> Tensor:
        """The block over the joint sequence, each token modulated as `picked` says; `text`
        (1, L, cap_feat_dim) the bundle an injection block reads."""
        if self.cross_attention is None:
            return self(x, rotary, temb, picked)
        assert text is not None and self.adaLN_modulation is not None
        # ZImageTransformerBlock._picked with the cross-attention between its two halves
        clean, noisy = picked
        mods = [Modulation(self.adaLN_modulation[0](temb), 4), clean.of(self)]

        def scaled_by(normed: Tensor, index: int) -> Tensor:
            out = _picked_scaled(normed, noisy, mods[0][index], mods[1][index])
            return cast(typing.cast(Tensor, out), x.dtype)

        attn = self.attention(scaled_by(self.attention_norm1(x), 0), rotary)
        x = _picked_gated_add(x, noisy, (mods[0][1], mods[1][1]), self.attention_norm2(attn))
        cross = self.cross_attention(self.cross_attn_norm1(x), text)
        x = _gated(x, self.cross_attn_gate.reshape(1, 1, 1), self.cross_attn_norm2(cross))
        ff = self.feed_forward(scaled_by(self.ffn_norm1(x), 2))
        return _picked_gated_add(x, noisy, (mods[0][3], mods[1][3]), self.ffn_norm2(ff))


class PerceiverLayer(nn.Module):
    """Gist tokens cross-attend to the text, attend to each other (no rotary positions), then
    a feed-forward; plain residuals. diffusers: `BriaFibo2PerceiverLayer`."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim, eps, heads = cfg["dim"], cfg["norm_eps"], cfg["n_heads"]
        self.cross_attn_norm = RMSNorm(dim, eps, place=place)
        self.cross_attention = Fibo2CrossAttention(dim, cfg["cap_feat_dim"], heads, eps, place)
        self.self_attn_norm = RMSNorm(dim, eps, place=place)
        self.self_attention = ZImageAttention(dim, heads, place, qk_norm=True)
        self.self_attention.norm_q.eps = self.self_attention.norm_k.eps = eps
        self.ffn_norm = RMSNorm(dim, eps, place=place)
        self.ffn = ZImageFeedForward(dim, cfg["ffn_hidden"], place)

    def forward(self, x: Tensor, text: Tensor) -> Tensor:
        x = x + self.cross_attention(self.cross_attn_norm(x), text)
        x = x + self.self_attention(self.self_attn_norm(x), None)  # type: ignore[arg-type]
        return x + self.ffn(self.ffn_norm(x))


class Perceiver(nn.Module):
    """The first `count` of the learned queries through the layers, then an RMS norm."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        self.latent_queries = nn.parameter((cfg["max_num_gist_tokens"], cfg["dim"]), **place)
        self.layers = nn.ModuleList([PerceiverLayer(cfg, place)
                                     for _ in range(cfg["perceiver_num_layers"])])
        self.norm_out = RMSNorm(cfg["dim"], cfg["norm_eps"], place=place)

    def forward(self, text: Tensor, count: int) -> Tensor:
        x = take_slice(self.latent_queries, 0, count, axis=0).reshape(1, count, -1)
        for layer in self.layers:
            x = layer(x, text)
        return typing.cast(Tensor, self.norm_out(x))


class BriaFibo2Transformer2DModel(nn.Module):
    """Latents (1, C, H, W), the timestep and the prompt's six text bundles -> the velocity
    (1, C, H, W). Config: `transformer/config.json` of a FIBO 2 folder (diffusers' fields);
    parameter names are diffusers'. diffusers: `BriaFibo2Transformer2DModel(latents,
    timestep, encoder_hidden_states, context_latents=).sample`, one picture."""

    _rotary = ZImageTransformer2DModel._rotary  # Z-Image's tables, of this config's axes

    def rotary(self, ids: np.ndarray) -> tuple[Tensor, Tensor]:
        """cos/sin (L, 1, head_dim) of integer positions ids (L, 3), kept on the device for
        the next steps: Z-Image's (`ZImageTransformer2DModel.rotary`)."""
        return ZImageTransformer2DModel.rotary(typing.cast(Any, self), ids)

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        dim, heads = cfg["dim"], cfg["n_heads"]
        if dim % heads or sum(cfg["axes_dims"]) != dim // heads:
            raise ValueError(f"axes_dims {tuple(cfg['axes_dims'])} must add up to the head "
                             f"dim {dim} / {heads}")
        injections = tuple(cfg["injection_layer_ids"])
        if not all(0 <= k < cfg["n_layers"] for k in injections):
            raise ValueError(f"injection_layer_ids {injections} must name blocks 0 .. "
                             f"{cfg['n_layers'] - 1}")
        # Z-Image's blocks with FIBO 2's feed-forward width, a multiple of 64
        cfg.update(ffn_hidden=(dim * 8 // 3) // 64 * 64, qk_norm=True)
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        p, channels = cfg["patch_size"], cfg["in_channels"]
        self.x_embedder = nn.Linear(p * p * channels, dim, **place)
        self.t_embedder = TimestepEmbedder(min(dim, ADALN), place)
        self.noise_refiner = nn.ModuleList([BriaFibo2TransformerBlock(cfg, place, cross=False)
                                            for _ in range(cfg["n_refiner_layers"])])
        self.perceiver = Perceiver(cfg, place)
        self.layers = nn.ModuleList([BriaFibo2TransformerBlock(cfg, place, cross=k in injections)
                                     for k in range(cfg["n_layers"])])
        self.final_layer = FinalLayer(dim, p * p * channels, place)
        self._tables: dict[tuple[Any, ...], tuple[Tensor, Tensor]] = {}

    @property
    def device(self) -> Device:
        return self.x_embedder.weight.device

    @property
    def dtype(self) -> np.dtype:
        return self.x_embedder.weight.dtype

    def clean(self) -> CleanModulation:
        """The t = 0 modulations of the gist and context tokens, for one denoising's calls
        (`forward`'s `clean`)."""
        clean = CleanModulation()
        clean.temb = self._temb(0.0)
        return clean

    def _temb(self, t: float) -> Tensor:
        """The timestep embedding (1, 256) of the noise level `t`: t * t_scale's."""
        scaled = np.full(1, np.float32(t) * np.float32(self.config["t_scale"]), np.float32)
        return cast(self.t_embedder(scaled, self.device), self.dtype)

    def forward(self, latents: Tensor, timestep: float, texts: Sequence[Tensor],
                contexts: Sequence[Tensor] = (), clean: CleanModulation | None = None
                ) -> Tensor:
        """latents (1, C, H, W), H and W multiples of the patch size; `timestep` the noise
        level in [0, 1] (1: pure noise); `texts`: the 1 + len(injection_layer_ids) bundles
        (1, L, cap_feat_dim) in the model's dtype, the Perceiver's first; `contexts`: the
        latents (1, C, h, w) of pictures to edit, clean tokens after the image's; `clean`:
        `self.clean()`, kept across a denoising's steps (made here where None)."""
        cfg, p = self.config, self.config["patch_size"]
        _, _, height, width = latents.shape
        if height % p or width % p:
            raise ValueError(f"latents of {height} x {width} are not multiples of the patch "
                             f"size {p}; use a picture size divisible by {8 * p}")
        if len(texts) != 1 + len(cfg["injection_layer_ids"]):
            raise ValueError(f"{len(texts)} text bundles; this transformer reads "
                             f"{1 + len(cfg['injection_layer_ids'])}")
        clean = clean or self.clean()
        temb = self._temb(timestep)
        # 1. the image's and the contexts' patches, each on a rotary plane of its own
        plane = cfg["max_num_gist_tokens"] + 1
        grids = [(height // p, width // p)] + [(c.shape[2] // p, c.shape[3] // p)
                                               for c in contexts]
        ids = [_grid(rows, columns, plane + k) for k, (rows, columns) in enumerate(grids)]
        image_ids = np.concatenate(ids)
        tokens = [patchify(latents, p)] + [patchify(cast(c, self.dtype), p) for c in contexts]
        x = self.x_embedder(tokens[0] if len(tokens) == 1 else concatenate(tokens, axis=1))
        count = grids[0][0] * grids[0][1]
        # 2. the noise refiner: per-token modulation only with contexts (clean tokens)
        refiner_noisy = (np.arange(len(image_ids)) < count).astype(np.int64)
        picked = (None if not contexts else
                  (clean, clean.flags(refiner_noisy, self.dtype, self.device)))
        rotary = self.rotary(image_ids)
        for block in self.noise_refiner:
            x = block(x, rotary, temb, picked)
        # 3. the gist tokens from the first bundle, then [gist, image, contexts] together
        gists = gist_count(texts[0].shape[1], cfg)
        gist = self.perceiver(texts[0], gists)
        gist_ids = np.zeros((gists, 3), np.int64)
        gist_ids[:, 0] = np.arange(1, gists + 1)
        x = concatenate([gist, x], axis=1)
        noisy = np.zeros(gists + len(image_ids), np.int64)
        noisy[gists: gists + count] = 1
        joint = (clean, clean.flags(noisy, self.dtype, self.device))
        rotary = self.rotary(np.concatenate([gist_ids, image_ids]))
        bundle = {k: texts[i + 1] for i, k in enumerate(cfg["injection_layer_ids"])}
        for k, block in enumerate(self.layers):
            x = block.joint(x, rotary, temb, joint, bundle.get(k))
        # 4. the final layer over the image's patches, back to latents
        out = self.final_layer(take_slice(x, gists, gists + count, axis=1), temb)
        return unpatchify(out, p, height, width)


def _grid(rows: int, columns: int, plane: int) -> np.ndarray:
    """(rows * columns, 3) positions (plane, row, column), row-major."""
    ids = np.zeros((rows, columns, 3), np.int64)
    ids[..., 0] = plane
    ids[..., 1], ids[..., 2] = np.arange(rows)[:, None], np.arange(columns)[None, :]
    return ids.reshape(-1, 3)
