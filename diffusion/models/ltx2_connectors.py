"""LTX-2's text connectors (diffusers' `LTX2TextConnectors`, pipelines/ltx2/connectors.py):
Gemma 3's hidden states of every layer, normalised and packed per token, projected, then two
1D transformers (video, audio) whose padding is replaced by learnable registers give the
prompt states the video and audio streams of the DiT attend to.

    # stacked: (1, n, C, layers), every hidden state of one prompt's n real tokens
    video, audio = connectors.project(pack_states(stacked, per_token=connectors.per_modality))
    video, audio, mask = connectors.connect([video], [audio], length=1024)

LTX-2.0 normalises each layer by its mean and range over the prompt's tokens and projects once
(`text_proj_in`) for both streams; LTX-2.3 (`per_modality_projections`) RMS-normalises each
token's layer and projects per stream. Only a prompt's real tokens are packed and projected:
the connectors move them to the front and fill the rest of the `length` rows with the
registers (row i: register i % count), and attend over all rows unmasked, so padding rows
never reach the output. Connectors without registers are refused.

The residual streams are float32 whatever the weights' dtype; the projections and attention
run in the model's dtype from normed values.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, elementwise_kernel, nn, permute, take, take_slice
from gpustd import max as reduce_max
from gpustd import min as reduce_min
from gpustd import sum as reduce_sum

from .dit_layers import FeedForward
from .layers import Place
from .llm_layers import residual
from .transformer_ops import RMSNorm, cast, kept

__all__ = ["LTX2TextConnectors", "pack_states"]

_EPS = 1e-6  # diffusers' eps of the packing, the norms and the connectors' RMS norms


@elementwise_kernel
def _range_norm(x, total, low, high, count, scale):
    # (x - masked mean) / (max - min + eps) * scale, the mean's count + eps as diffusers has it
    return (x - total / (count + 1e-6)) / (high - low + 1e-6) * scale


@elementwise_kernel
def _times(x, factor):  # LTX-2.3's packed rows scaled for a stream's width, in float32
    return x * factor


@elementwise_kernel
def _gated(x, logits):  # attention output times 2 * sigmoid(its head's gate logit)
    return x * (2.0 / (1.0 + math.exp(-float(logits))))


def pack_states(stacked: Tensor, *, per_token: bool = False, scale: float = 8.0) -> Tensor:
    """One prompt's hidden states (1, n, C, layers) float32 over its n real tokens, layer l
    the transformers' hidden_states[l] -> (1, n, C * layers), feature c * layers + l.
    LTX-2.0: each layer less its mean over the n tokens' features, over its range there, times
    `scale`; `per_token` (LTX-2.3): each token's layer RMS-normed over C. diffusers:
    `per_layer_masked_mean_norm(states, lengths, device, "left", scale)` (or
    `per_token_rms_norm`), the real rows of its output."""
    _, length, channels, layers = stacked.shape
    if per_token:  # the norm runs over the last axis: C there and back
        by_layer = permute(stacked, (0, 1, 3, 2))
        normed = nn.rms_norm_rope(by_layer, None, eps=_EPS)
        return permute(normed, (0, 1, 3, 2)).reshape(1, length, channels * layers)
    total = reduce_sum(stacked, axis=(1, 2), keepdims=True)
    low = reduce_min(stacked, axis=(1, 2), keepdims=True)
    high = reduce_max(stacked, axis=(1, 2), keepdims=True)
    out = _range_norm(stacked, total, low, high, float(length * channels), float(scale))
    return typing.cast(Tensor, out).reshape(1, length, channels * layers)


def _tables(length: int, dim: int, heads: int, cfg: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """cos, sin of the connectors' 1D rotation over `length` rows, in float32 as diffusers'
    `LTX2RotaryPosEmbed1d` computes them: positions i / base_seq_len mapped to [-1, 1),
    frequencies theta^linspace(0, 1, dim / 2) * pi / 2 (float64 where `rope_double_precision`).
    "interleaved": (L, 1, dim), each frequency twice in a row (pairs x[2i], x[2i+1] over the
    whole width); "split": (L * heads, 1, dim / heads), head h's run of frequencies in the
    halves layout (pairs x[i], x[i + D/2] within each head)."""
    grid = np.arange(length, dtype=np.float32) / np.float32(cfg["connector_rope_base_seq_len"])
    wide = np.float64 if cfg["rope_double_precision"] else np.float32
    freqs = (np.asarray(cfg["rope_theta"], wide) ** np.linspace(0.0, 1.0, dim // 2, dtype=wide)
             * np.asarray(np.pi / 2, wide)).astype(np.float32)
    angle = ((grid * np.float32(2) - np.float32(1))[:, None] * freqs).astype(np.float32)
    if cfg["rope_type"] == "interleaved":
        angle = np.repeat(angle, 2, axis=1).reshape(length, 1, dim)
    else:
        half = angle.reshape(length * heads, 1, dim // heads // 2)
        angle = np.concatenate([half, half], axis=2)
    return np.cos(angle), np.sin(angle)


class ConnectorAttention(nn.Module):
    """Self-attention of the connectors: to_q/to_k/to_v/to_out.0 with biases, RMS norms of q
    and k over all heads together (norm_q, norm_k), the 1D rotation, and optionally a gate per
    head (`to_gate_logits`: the output times 2 * sigmoid(logit)). diffusers: `LTX2Attention`
    with `LTX2AudioVideoAttnProcessor`, self-attention without a mask."""

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place, *, gated: bool,
                 split: bool) -> None:
        inner = heads * head_dim
        self.heads, self.split = heads, split
        self.norm_q = RMSNorm(inner, _EPS, place=place)
        self.norm_k = RMSNorm(inner, _EPS, place=place)
        self.to_q = nn.Linear(dim, inner, **place)
        self.to_k = nn.Linear(dim, inner, **place)
        self.to_v = nn.Linear(dim, inner, **place)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, **place)])
        if gated:
            self.to_gate_logits = nn.Linear(dim, heads, **place)

    def _rotate(self, norm: RMSNorm, x: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        if not self.split:  # norm and interleaved rotation over the whole width, one pass
            return nn.rms_norm_rope(x, norm.weight, rotary, eps=norm.eps)
        batch, length, width = x.shape
        rows = norm(x).reshape(batch, length * self.heads, width // self.heads)
        return nn.rms_norm_rope(rows, None, rotary, eps=None, halves=True).reshape(x.shape)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        q, k, v = nn.Linear.each(x, [self.to_q, self.to_k, self.to_v])
        q, k = self._rotate(self.norm_q, q, rotary), self._rotate(self.norm_k, k, rotary)
        out = nn.attention(q, k, v, heads=self.heads)
        gate = getattr(self, "to_gate_logits", None)
        if gate is not None:
            batch, length, width = out.shape
            logits = gate(x).reshape(batch, length, self.heads, 1)
            out = typing.cast(Tensor, _gated(out.reshape(batch, length, self.heads, -1),
                                             logits)).reshape(batch, length, width)
        return self.to_out[0](out)


class ConnectorBlock(nn.Module):
    """x + attn1(norm1 x), then + ff(norm2 x), the norms without weights. diffusers:
    `LTX2TransformerBlock1d`."""

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place, *, gated: bool,
                 split: bool) -> None:
        self.dtype = place["dtype"]
        self.attn1 = ConnectorAttention(dim, heads, head_dim, place, gated=gated, split=split)
        self.ff = FeedForward(dim, place)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        h = cast(nn.rms_norm_rope(x, None, eps=_EPS), self.dtype)
        x = residual(x, self.attn1(h, rotary))
        h = cast(nn.rms_norm_rope(x, None, eps=_EPS), self.dtype)
        return residual(x, self.ff(h))


class ConnectorTransformer(nn.Module):
    """The real rows of each prompt first, then the registers to `length` rows, through the
    blocks and a final RMS norm. diffusers: `LTX2ConnectorTransformer1d`."""

    def __init__(self, cfg: dict[str, Any], prefix: str, place: Place) -> None:
        heads = cfg[f"{prefix}_connector_num_attention_heads"]
        head_dim = cfg[f"{prefix}_connector_attention_head_dim"]
        self.cfg, self.heads, self.dim = cfg, heads, heads * head_dim
        self.count = cfg[f"{prefix}_connector_num_learnable_registers"]
        self.learnable_registers = nn.parameter((self.count, self.dim), place["dtype"],
                                                place["device"])
        gated, split = bool(cfg[f"{prefix}_gated_attn"]), cfg["rope_type"] == "split"
        self.transformer_blocks = nn.ModuleList([
            ConnectorBlock(self.dim, heads, head_dim, place, gated=gated, split=split)
            for _ in range(cfg[f"{prefix}_connector_num_layers"])])
        self._rotary: dict[tuple[int, Device], tuple[Tensor, Tensor]] = {}

    def forward(self, rows: Sequence[Tensor], length: int) -> Tensor:
        """rows: each prompt's real rows (1, n, dim) -> (B, length, dim) float32."""
        if length % self.count:
            raise ValueError(f"the prompt length {length} must be a multiple of the "
                             f"connectors' {self.count} learnable registers")
        registers = cast(self.learnable_registers, np.float32)
        device = registers.device
        tiled = take(registers, asarray(np.arange(length, dtype=np.int32) % self.count,
                                        device=device), axis=0).reshape(1, length, self.dim)
        filled = [concatenate([cast(r, np.float32), take_slice(tiled, r.shape[1], length, 1)],
                              axis=1) if r.shape[1] < length else cast(r, np.float32)
                  for r in rows]
        x = concatenate(filled, axis=0) if len(filled) > 1 else filled[0]
        rotary = kept(self._rotary, (length, device), lambda: typing.cast(
            tuple[Tensor, Tensor], tuple(asarray(t, device=device) for t in _tables(
                length, self.dim, self.heads, self.cfg))))
        for block in self.transformer_blocks:
            x = block(x, rotary)
        return cast(nn.rms_norm_rope(x, None, eps=_EPS), np.float32)


_DEFAULTS: dict[str, Any] = {
    "caption_channels": 3840, "text_proj_in_factor": 49, "connector_rope_base_seq_len": 4096,
    "rope_theta": 10000.0, "rope_double_precision": True, "rope_type": "interleaved",
    "per_modality_projections": False, "video_hidden_dim": 4096, "audio_hidden_dim": 2048,
    "proj_bias": False, **{f"{m}_{k}": v for m in ("video", "audio") for k, v in (
        ("connector_num_attention_heads", 30), ("connector_attention_head_dim", 128),
        ("connector_num_layers", 2), ("connector_num_learnable_registers", 128),
        ("gated_attn", False))}}


class LTX2TextConnectors(nn.Module):
    """Packed Gemma states -> (video prompt states, audio prompt states, mask).

    Config: diffusers' `connectors/config.json`; parameter names diffusers' (`text_proj_in`
    or `video_text_proj_in` / `audio_text_proj_in`, `video_connector.transformer_blocks.0.
    attn1.to_q.weight`, `video_connector.learnable_registers`, ...). diffusers:
    `LTX2TextConnectors(states, attention_mask)`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["rope_type"] not in ("interleaved", "split"):
            raise ValueError(f"connector rope_type {cfg['rope_type']!r} is not supported; "
                             "use 'interleaved' or 'split'")
        place: Place = {"dtype": dtype, "device": device}
        self.cfg, self.dtype = cfg, np.dtype(dtype)
        channels = cfg["caption_channels"]
        width = channels * cfg["text_proj_in_factor"]
        self.per_modality = bool(cfg["per_modality_projections"])
        outs = ((cfg["video_hidden_dim"], cfg["audio_hidden_dim"]) if self.per_modality
                else (channels, channels))
        for m, out in zip(("video", "audio"), outs, strict=True):
            if cfg[f"{m}_connector_num_learnable_registers"] is None:
                raise ValueError("connectors without learnable registers are not supported "
                                 "(LTX-2's have them): give the LTX-2 folder's connectors/")
            head_dim = cfg[f"{m}_connector_attention_head_dim"]
            inner = cfg[f"{m}_connector_num_attention_heads"] * head_dim
            if inner != out or (head_dim if cfg["rope_type"] == "split" else inner) % 2:
                raise ValueError(f"the {m} connector is {inner} wide (heads x head_dim, "
                                 f"{head_dim}) but its projection gives {out} features; the "
                                 "rotation needs an even width (an even head_dim if split)")
        bias = bool(cfg["proj_bias"])
        if self.per_modality:
            self.video_text_proj_in = nn.Linear(width, outs[0], bias, **place)
            self.audio_text_proj_in = nn.Linear(width, outs[1], bias, **place)
        else:
            self.text_proj_in = nn.Linear(width, channels, bias, **place)
        self.video_connector = ConnectorTransformer(cfg, "video", place)
        self.audio_connector = ConnectorTransformer(cfg, "audio", place)

    def project(self, packed: Tensor) -> tuple[Tensor, Tensor]:
        """pack_states' (1, n, C * layers) -> the video and audio rows (1, n, width) before
        the connectors: one projection for both (LTX-2.0), or one each of the packed rows
        times sqrt(width / C) (LTX-2.3)."""
        x = cast(packed, self.dtype)
        if not self.per_modality:
            shared = self.text_proj_in(x)
            return shared, shared
        channels = self.cfg["caption_channels"]
        video = self.video_text_proj_in(typing.cast(Tensor, _times(
            packed, math.sqrt(self.cfg["video_hidden_dim"] / channels))).astype(self.dtype))
        audio = self.audio_text_proj_in(typing.cast(Tensor, _times(
            packed, math.sqrt(self.cfg["audio_hidden_dim"] / channels))).astype(self.dtype))
        return video, audio

    def connect(self, video: Sequence[Tensor], audio: Sequence[Tensor], length: int
                ) -> tuple[Tensor, Tensor, np.ndarray]:
        """project's rows of each prompt -> video (B, length, video width) and audio (B,
        length, audio width) float32 prompt states, and their mask (B, length) int64: all
        ones, the registers filling every row past a prompt's tokens."""
        return (self.video_connector(video, length), self.audio_connector(audio, length),
                np.ones((len(video), length), np.int64))

    def forward(self, states: Any, attention_mask: Any) -> tuple[Tensor, Tensor, np.ndarray]:
        """states (B, L, C * layers) float32, diffusers' packed `prompt_embeds` (feature
        c * layers + l), attention_mask (B, L) (1: a real token, on either side) -> connect's
        triple. diffusers: `LTX2TextConnectors(states, attention_mask)`."""
        mask = np.asarray(attention_mask).astype(bool)
        device = self.video_connector.learnable_registers.device
        x = states if isinstance(states, Tensor) else asarray(
            np.asarray(states, np.float32), device=device)
        channels = self.cfg["caption_channels"]
        layers = self.cfg["text_proj_in_factor"]
        if x.ndim != 3 or mask.shape != x.shape[:2] or x.shape[2] != channels * layers:
            raise ValueError(f"the connectors read (B, L, {channels * layers}) states and a "
                             f"(B, L) mask, got {x.shape} and {mask.shape}")
        if not mask.any(axis=1).all():
            raise ValueError("a row of attention_mask keeps no token; each prompt has one "
                             "at least (its <bos>)")
        video, audio = [], []
        for row in range(x.shape[0]):
            where = asarray(np.flatnonzero(mask[row]).astype(np.int32), device=x.device)
            real = take(take_slice(x, row, row + 1, 0), where, axis=1)
            rows = self.project(pack_states(
                cast(real, np.float32).reshape(1, -1, channels, layers),
                per_token=self.per_modality))
            video.append(rows[0])
            audio.append(rows[1])
        return self.connect(video, audio, x.shape[1])
