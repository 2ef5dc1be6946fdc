"""The Ideogram 4 transformer (diffusers' Ideogram4Transformer2DModel names): a single-stream
DiT over the prompt's tokens followed by the picture's 2x2 latent patches. The prompt's
tokens are Qwen3-VL's hidden states of 13 decoder layers interleaved feature by feature
(`llm_features_dim` = 13 x hidden), RMS-normed and projected; the patches are projected; a
learned indicator embedding (text 0, image 1) is added to each. Z-Image's blocks (sandwich RMS
norms, adaLN scales and tanh gates from the timestep alone) with the LLMs' half-rotation RoPE
over three interleaved axes (Qwen3-VL's MRoPE: text at (p, p, p), the picture's patches at
65536 + (0, row, column)).

diffusers runs a batch as one packed sequence, left-padded to `max_sequence_length` with a
block-diagonal segment mask: the padding only ever sees itself, so each prompt's tokens and
its picture's run here unpadded, without a mask. The unconditional model (the pipeline's
`unconditional_transformer`, its own weights) reads the picture's patches alone.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, take_slice

from .layers import Place
from .transformer_ops import Modulation, RMSNorm, cast, kept, norm_rope, rms_norm
from .z_image_blocks import ZImageFeedForward, _gated, _norm_scaled, scaled

__all__ = ["IMAGE_POSITION_OFFSET", "QWEN3_VL_ACTIVATION_LAYERS",
           "Ideogram4Transformer2DModel", "interleave_layers"]

# the Qwen3-VL decoder layers whose outputs (before the final norm) make the prompt's features
QWEN3_VL_ACTIVATION_LAYERS = (0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 35)
IMAGE_POSITION_OFFSET = 65536  # the picture's positions start here, past any text position
_KEPT_TABLES = 8  # rotary tables and role ids kept: two a prompt length, for a few prompts
_DEFAULTS: dict[str, Any] = dict(
    in_channels=128, num_layers=34, attention_head_dim=256, num_attention_heads=18,
    intermediate_size=12288, adaln_dim=512, llm_features_dim=53248, rope_theta=5_000_000,
    mrope_section=(24, 20, 20), norm_eps=1e-5)


def interleave_layers(states: list[Tensor]) -> Tensor:
    """The taps (B, L, D) each, as one (B, L, D * n) with feature d of tap k at d * n + k.
    diffusers: `torch.stack(states).permute(1, 2, 3, 0).reshape(B, L, -1)`."""
    batch, length, width = states[0].shape
    return concatenate([s.reshape(batch, length, width, 1) for s in states], axis=3
                       ).reshape(batch, length, width * len(states))


def sinusoid(t: np.ndarray, dim: int) -> np.ndarray:
    """(B,) times in [0, 1] -> (B, dim) [sin, cos] features of 1e4 t, float32 angles as
    diffusers' `_sinusoidal_embedding(1e4 * t, dim)` forms them."""
    half = dim // 2
    freq = np.exp(np.arange(half, dtype=np.float32) * np.float32(-math.log(1e4) / (half - 1)))
    angle = (np.float32(1e4) * t.astype(np.float32))[:, None] * freq.astype(np.float32)
    emb = np.concatenate([np.sin(angle.astype(np.float64)), np.cos(angle.astype(np.float64))],
                         axis=1).astype(np.float32)
    return np.pad(emb, ((0, 0), (0, dim % 2)))


class Ideogram4Attention(nn.Module):
    """Self-attention with per-head RMS norms of q and k (eps 1e-5) and half-rotation RoPE;
    no biases. diffusers: `Ideogram4Attention` (no mask: see the module doc)."""

    def __init__(self, dim: int, heads: int, place: Place) -> None:
        self.heads, self.head_dim = heads, dim // heads
        self.to_q = nn.Linear(dim, dim, bias=False, **place)
        self.to_k = nn.Linear(dim, dim, bias=False, **place)
        self.to_v = nn.Linear(dim, dim, bias=False, **place)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, bias=False, **place)])
        self.norm_q = RMSNorm(self.head_dim, 1e-5, place=place)
        self.norm_k = RMSNorm(self.head_dim, 1e-5, place=place)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        q, k, v = nn.Linear.each(x, [self.to_q, self.to_k, self.to_v])
        q = norm_rope(self.norm_q, q, rotary, self.heads, halves=True)
        k = norm_rope(self.norm_k, k, rotary, self.heads, halves=True)
        return self.to_out[0](nn.attention(q, k, v, heads=self.heads))


class Ideogram4TransformerBlock(nn.Module):
    """Z-Image's modulated block: x + tanh(gate) * norm2(attention(norm1(x) * (1 + scale))),
    the same around the SwiGLU feed-forward, the four vectors from `adaln_modulation`."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim, eps = cfg["attention_head_dim"] * cfg["num_attention_heads"], cfg["norm_eps"]
        self.attention = Ideogram4Attention(dim, cfg["num_attention_heads"], place)
        self.feed_forward = ZImageFeedForward(dim, cfg["intermediate_size"], place)
        self.attention_norm1 = RMSNorm(dim, eps, place=place)
        self.ffn_norm1 = RMSNorm(dim, eps, place=place)
        self.attention_norm2 = RMSNorm(dim, eps, place=place)
        self.ffn_norm2 = RMSNorm(dim, eps, place=place)
        self.adaln_modulation = nn.Linear(cfg["adaln_dim"], 4 * dim, **place)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], adaln: Tensor) -> Tensor:
        """x (B, L, dim); adaln (B, adaln_dim), the silu'd timestep projection."""
        mods = Modulation(self.adaln_modulation(adaln), 4)
        attn = self.attention(_norm_scaled(self.attention_norm1, x, mods, 0), rotary)
        x = _gated(x, mods[1], self.attention_norm2(attn))
        ff = self.feed_forward(_norm_scaled(self.ffn_norm1, x, mods, 2))
        return _gated(x, mods[3], self.ffn_norm2(ff))


class Ideogram4EmbedScalar(nn.Module):
    """mlp_out(silu(mlp_in(sinusoid(t)))). diffusers: `Ideogram4EmbedScalar`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.dim = dim
        self.mlp_in = nn.Linear(dim, dim, **place)
        self.mlp_out = nn.Linear(dim, dim, **place)

    def forward(self, features: Tensor) -> Tensor:
        """features (B, dim): `sinusoid(t)` in the model's dtype."""
        return self.mlp_out(nn.silu(self.mlp_in(features)))


class Ideogram4FinalLayer(nn.Module):
    """LayerNorm (no affine, eps 1e-6) scaled by 1 + adaln_modulation(silu(adaln)), then the
    projection to patches."""

    def __init__(self, dim: int, out: int, adaln_dim: int, place: Place) -> None:
        self.linear = nn.Linear(dim, out, **place)
        self.adaln_modulation = nn.Linear(adaln_dim, dim, **place)

    def forward(self, x: Tensor, adaln: Tensor) -> Tensor:
        scale = self.adaln_modulation(nn.silu(adaln))
        normed = nn.layer_norm(x, None, None, eps=1e-6)
        return self.linear(scaled(normed, scale.reshape(scale.shape[0], 1, scale.shape[1])))


class Ideogram4Transformer2DModel(nn.Module):
    """Patch tokens (B, N, in_channels) and the prompt's features -> the velocity towards
    the picture (B, N, in_channels), diffusers' `Ideogram4Transformer2DModel(...).sample`
    at the image tokens.

    Config: `transformer/config.json` (or `unconditional_transformer/`) of an Ideogram 4
    folder. Parameter names are diffusers' (`input_proj.weight`, `llm_cond_norm.weight`,
    `layers.0.attention.to_q.weight`, `layers.0.adaln_modulation.weight`,
    `final_layer.linear.weight`, ...)."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        head_dim = cfg["attention_head_dim"]
        sections = tuple(cfg["mrope_section"])
        if head_dim % 2 or len(sections) != 3 or 3 * max(sections[1:]) > head_dim // 2:
            raise ValueError(f"mrope_section {sections} does not fit heads of {head_dim}: "
                             "three axes, the rows' and columns' 3 x section within half a head")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        dim, channels = head_dim * cfg["num_attention_heads"], cfg["in_channels"]
        self.input_proj = nn.Linear(channels, dim, **place)
        self.llm_cond_norm = RMSNorm(cfg["llm_features_dim"], 1e-6, place=place)
        self.llm_cond_proj = nn.Linear(cfg["llm_features_dim"], dim, **place)
        self.t_embedding = Ideogram4EmbedScalar(dim, place)
        self.adaln_proj = nn.Linear(dim, cfg["adaln_dim"], **place)
        self.embed_image_indicator = nn.Embedding(2, dim, **place)
        self.layers = nn.ModuleList([Ideogram4TransformerBlock(cfg, place)
                                     for _ in range(cfg["num_layers"])])
        self.final_layer = Ideogram4FinalLayer(dim, channels, cfg["adaln_dim"], place)
        self._tables: dict[tuple[Any, ...], Any] = {}

    @property
    def device(self) -> Device:
        return self.input_proj.weight.device

    @property
    def dtype(self) -> np.dtype:
        return self.input_proj.weight.dtype

    def rotary(self, text: int, rows: int, columns: int) -> tuple[Tensor, Tensor]:
        """cos/sin (text + rows * columns, 1, head_dim) of the text's positions (p, p, p) and
        the patches' 65536 + (0, row, column), frequency i turned by the row where i % 3 == 1
        and i < 3 * section[1], by the column where i % 3 == 2 and i < 3 * section[2], else
        by the first axis; float32 angles as diffusers' `Ideogram4MRoPE` (its positions near
        65536 need them: bfloat16 would collapse them). Kept on the device by size."""
        return kept(self._tables, (text, rows, columns, self.device),
                    lambda: self._rotary(text, rows, columns), _KEPT_TABLES)

    def _rotary(self, text: int, rows: int, columns: int) -> tuple[Tensor, Tensor]:
        dim, theta = self.config["attention_head_dim"], self.config["rope_theta"]
        sections = self.config["mrope_section"]
        exponents = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
        inv_freq = (np.float32(1) / np.float32(float(theta) ** exponents.astype(np.float64)))
        grid = np.stack(np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij"), -1)
        ids = np.zeros((text + rows * columns, 3), np.int64)
        ids[:text] = np.arange(text)[:, None]
        ids[text:, 1:] = grid.reshape(-1, 2)
        ids[text:] += IMAGE_POSITION_OFFSET
        index = np.arange(dim // 2)
        axis = np.zeros(dim // 2, np.int64)
        for k in (1, 2):
            axis[(index % 3 == k) & (index < 3 * sections[k])] = k
        angle = ids[:, axis].astype(np.float32) * inv_freq  # float32 products, as torch's
        angle = np.concatenate([angle, angle], axis=1).astype(np.float64)
        shape = (angle.shape[0], 1, dim)
        return (asarray(np.cos(angle).astype(np.float32).reshape(shape), device=self.device),
                asarray(np.sin(angle).astype(np.float32).reshape(shape), device=self.device))

    def time_features(self, timestep: Any) -> Tensor:
        """The sinusoid (B, dim) `t_embedding` reads, in the model's dtype, of timestep (B,)
        host numbers in [0, 1] (1 the clean end), rounded to the model's dtype first as
        diffusers' pipeline hands them; made on the host (float64 sines, as `sinusoid`)."""
        t = np.asarray(timestep, np.float32).reshape(-1).astype(self.dtype)
        return asarray(sinusoid(t, self.t_embedding.dim), dtype=self.dtype, device=self.device)

    def adaln(self, timestep: Any) -> Tensor:
        """silu(adaln_proj(t_embedding(t))) (B, adaln_dim) of timestep (B,) host numbers, or
        of their `time_features` (a Tensor: a replayed step's input)."""
        features = timestep if isinstance(timestep, Tensor) else self.time_features(timestep)
        return nn.silu(self.adaln_proj(cast(self.t_embedding(features), self.dtype)))

    def forward(self, latents: Tensor, timestep: Any, states: Tensor | None,
                rows: int, columns: int) -> Tensor:
        """latents (B, rows * columns, in_channels), the patches row-major; timestep (B,)
        host numbers in [0, 1], or their `time_features` (a replayed step's); states (B, L,
        llm_features_dim) the prompt's interleaved features (float32 read as they are by the
        RMS norm), None for the unconditional
        model (no text tokens). Returns (B, rows * columns, in_channels) in the model's
        dtype."""
        count = latents.shape[1]
        if count != rows * columns:
            raise ValueError(f"{count} patch tokens for a {rows} x {columns} grid")
        adaln = self.adaln(timestep)
        x = self.input_proj(cast(latents, self.dtype))
        text = 0 if states is None else states.shape[1]
        if states is not None:
            normed = rms_norm(states, self.llm_cond_norm.weight, self.llm_cond_norm.eps)
            x = concatenate([self.llm_cond_proj(cast(normed, self.dtype)), x], axis=1)
        roles = np.concatenate([np.zeros(text, np.int32), np.ones(count, np.int32)])
        role = kept(self._tables, ("roles", text, count, self.device),
                    lambda: asarray(roles, device=self.device), _KEPT_TABLES)
        x = x + self.embed_image_indicator(role).reshape(1, text + count, -1)
        rotary = self.rotary(text, rows, columns)
        for block in self.layers:
            x = block(x, rotary, adaln)
        return self.final_layer(take_slice(x, text, text + count, axis=1), adaln)
