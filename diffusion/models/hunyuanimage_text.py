"""HunyuanImage 2.1's text inputs, HunyuanVideo 1.5's too (diffusers' names): the token
refiner (`context_embedder`: Qwen2.5-VL's states projected and refined by self-attention
blocks modulated by the timestep and the prompt's mean), ByT5's glyph projection
(`context_embedder_2`), and the joined text stream the transformer's blocks read.

diffusers pads both prompts to fixed lengths (1000 and 128 tokens) and masks the padding out
of every attention; a masked key changes nothing, and the text has no rotary positions, so
here the padding is dropped before the first projection: each prompt's kept tokens only,
padded to the batch's longest with a key mask where their counts differ.
"""

from __future__ import annotations

import typing
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, matmul, nn, take, take_slice

from .dit_layers import AdaLayerNormZero, CombinedTimestepTextProjEmbeddings, JointAttention
from .layers import Place
from .transformer_ops import cast, gated_linear

__all__ = ["ByT5TextProjection", "TokenRefiner", "device_states", "gather_tokens", "glyph_part",
           "joined_text", "kept_tokens"]


def kept_tokens(mask: Any, batch: int, length: int, name: str) -> list[np.ndarray]:
    """The indices of each sample's nonzero `mask` entries ((batch, length) host values);
    ValueError naming `name` for a mask of another shape."""
    keep = np.asarray(mask) != 0
    if keep.shape != (batch, length):
        raise ValueError(f"{name} must be (batch, tokens) = {(batch, length)}, got "
                         f"{keep.shape}; pass the text encoder's attention mask")
    return [np.flatnonzero(row) for row in keep]


def gather_tokens(states: Tensor, rows: list[np.ndarray]) -> tuple[Tensor, np.ndarray | None]:
    """(B, N, D): sample b's tokens rows[b] of states (B, L, D), N the longest, the shorter
    padded with their first row; and the (B, N) flags of the real ones (None where none is
    padding). A slice where every sample keeps the same run of tokens (one prompt, its
    padding after it: no index upload). numpy: `states[b, rows[b]]` stacked."""
    batch, length, width = states.shape
    longest = max(len(r) for r in rows)
    first = rows[0]
    if len(first) and all(np.array_equal(r, first) for r in rows) \
            and (np.diff(first) == 1).all():
        if len(first) == length:
            return states, None
        return take_slice(states, int(first[0]), int(first[-1]) + 1, axis=1), None
    index = np.zeros((batch, longest), np.int64)
    real = np.zeros((batch, longest), bool)
    for b, r in enumerate(rows):
        index[b] = r[0] if len(r) else 0
        index[b, :len(r)] = r
        real[b, :len(r)] = True
    flat = (index + np.arange(batch)[:, None] * length).astype(np.int32).reshape(-1)
    picked = take(states.reshape(batch * length, width), asarray(flat, device=states.device),
                  axis=0)
    return picked.reshape(batch, longest, width), (None if real.all() else real)


class LinearSiLU(nn.Module):
    """proj then SiLU. diffusers: `LinearActivation(activation="silu")`."""

    def __init__(self, dim: int, inner: int, place: Place) -> None:
        self.proj = nn.Linear(dim, inner, **place)

    def forward(self, x: Tensor) -> Tensor:
        return nn.silu(self.proj(x))


class SiLUFeedForward(nn.Module):
    """net.0 (Linear + SiLU), net.2 (Linear). diffusers: `FeedForward(dim,
    activation_fn="linear-silu")`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.net = nn.ModuleList([LinearSiLU(dim, 4 * dim, place), nn.Identity(),
                                  nn.Linear(4 * dim, dim, **place)])

    def gated(self, residual: Tensor, gate: Tensor, x: Tensor) -> Tensor:
        """residual + gate * self(x), net.2's GEMM applying the gate where it can."""
        first, _, out = self.net
        return gated_linear(residual, gate, typing.cast(nn.Linear, out), first(x))


class RefinerBlocks(nn.Module):
    """The refiner's `refiner_blocks`. diffusers: `HunyuanImageIndividualTokenRefiner`."""

    def __init__(self, dim: int, heads: int, head_dim: int, layers: int,
                 place: Place) -> None:
        self.refiner_blocks = nn.ModuleList(
            [RefinerBlock(dim, heads, head_dim, place) for _ in range(layers)])


class RefinerBlock(nn.Module):
    """Self-attention and a SiLU feed-forward over the text, each after an affine LayerNorm
    and gated by `norm_out`'s two vectors from the timestep + prompt embedding. diffusers:
    `HunyuanImageIndividualTokenRefinerBlock`."""

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place) -> None:
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, **place)
        self.attn = JointAttention(dim, heads, head_dim, place, qk_norm=False, context=False)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, **place)
        self.ff = SiLUFeedForward(dim, place)
        self.norm_out = AdaLayerNormZero(dim, place, count=2)

    def forward(self, x: Tensor, temb: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, N, dim), temb (B, dim); mask: the keys each query sees (uint32, broadcast
        to (B, 1, N, N)) or None."""
        gate_msa, gate_mlp = self.norm_out(temb)
        x = self.attn.gated(x, gate_msa, self.norm1(x), None, None, mask)[0]
        return self.ff.gated(x, gate_mlp, self.norm2(x))


class TokenRefiner(nn.Module):
    """Qwen2.5-VL's states -> the text tokens: `proj_in`, then the refiner blocks modulated by
    `time_text_embed` of the timestep and the kept tokens' mean state. diffusers:
    `HunyuanImageTokenRefiner`; `HunyuanVideo15TokenRefiner` is the same without the token-0
    rule (its caller drops a padding token 0 and passes first_padding all False)."""

    def __init__(self, text_dim: int, heads: int, head_dim: int, layers: int,
                 place: Place) -> None:
        dim = heads * head_dim
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(dim, text_dim, place,
                                                                  guidance=False)
        self.proj_in = nn.Linear(text_dim, dim, **place)
        self.token_refiner = RefinerBlocks(dim, heads, head_dim, layers, place)

    def forward(self, states: Tensor, real: np.ndarray | None, timestep: np.ndarray,
                first_padding: np.ndarray) -> Tensor:
        """states (B, N, text_dim): gather_tokens' kept tokens (`real` its flags), in the
        model's dtype; timestep (B,) as the model's; first_padding (B,): whether a sample's
        token 0, kept at position 0 though its mask drops it, is padding."""
        batch, length, _ = states.shape
        real_tokens = np.ones((batch, length), bool) if real is None else real.copy()
        real_tokens[:, 0] &= ~first_padding
        # the mean of the real tokens' states, in float32 (diffusers' masked mean)
        weights = real_tokens / real_tokens.sum(axis=1, keepdims=True)
        pooled = matmul(asarray(weights.astype(np.float32)[:, None, :], device=states.device),
                        cast(states, np.float32)).reshape(batch, -1)
        temb = self.time_text_embed(timestep, cast(pooled, states.dtype))
        x = self.proj_in(states)
        mask = None
        if not real_tokens.all():
            # diffusers' rule: a real query sees the real keys, every query sees token 0
            sees = real_tokens[:, :, None] & real_tokens[:, None, :]
            sees[:, :, 0] = True
            if first_padding.any():
                mask = sees[:, None]
            else:  # key 0 is real: the key flags alone, broadcast over the queries
                mask = real_tokens[:, None, None, :]
            mask = asarray(mask.astype(np.uint32), device=states.device)
        for block in self.token_refiner.refiner_blocks:
            x = block(x, temb, mask)
        return x


class ByT5TextProjection(nn.Module):
    """ByT5's glyph states -> text tokens: LayerNorm, then three linears (2048 wide) with
    exact GELUs between. diffusers: `HunyuanImageByT5TextProjection`."""

    def __init__(self, in_dim: int, dim: int, place: Place, hidden: int = 2048) -> None:
        self.norm = nn.LayerNorm(in_dim, eps=1e-5, **place)
        self.linear_1 = nn.Linear(in_dim, hidden, **place)
        self.linear_2 = nn.Linear(hidden, hidden, **place)
        self.linear_3 = nn.Linear(hidden, dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_3(self.linear_2.gelu(self.linear_1.gelu(self.norm(x))))


def glyph_part(projection: ByT5TextProjection, glyph: Any, mask: Any, batch: int, dtype: Any,
               device: Device) -> tuple[Tensor, np.ndarray | None] | None:
    """ByT5's glyph states (B, L2, in_dim) projected, each sample's kept tokens only (`mask`
    (B, L2) nonzero), and their real flags (None where all are): a joined_text part; None
    where no sample keeps a glyph token. ValueError for a missing or misshapen mask."""
    glyph = device_states(glyph, dtype, device, "encoder_hidden_states_2")
    if mask is None:
        raise ValueError("encoder_hidden_states_2 needs encoder_attention_mask_2 "
                         "(ByT5's attention mask)")
    rows = kept_tokens(mask, batch, glyph.shape[1], "encoder_attention_mask_2")
    if not any(len(r) for r in rows):
        return None
    # a sample without glyph text keeps one token, flagged padding below
    picked, _ = gather_tokens(glyph, [r if len(r) else np.zeros(1, np.int64) for r in rows])
    flags = np.zeros(picked.shape[:2], bool)
    for b, r in enumerate(rows):
        flags[b, :len(r)] = True
    return projection(picked), None if flags.all() else flags


def joined_text(parts: list[tuple[Tensor, np.ndarray | None]], device: Device
                ) -> tuple[Tensor, np.ndarray | None]:
    """One text stream of several (tokens (B, N_i, dim), real flags or None) parts: each
    sample's real tokens of every part in order (diffusers puts the glyph's first; attention
    has no order), padded to the longest; and its real flags (None where all are)."""
    if len(parts) == 1:
        return parts[0]
    whole = concatenate([tokens for tokens, _ in parts], axis=1)
    flags = np.concatenate([np.ones(tokens.shape[:2], bool) if real is None else real
                            for tokens, real in parts], axis=1)
    return gather_tokens(whole, [np.flatnonzero(row) for row in flags])


def device_states(states: Any, dtype: Any, device: Device, name: str) -> Tensor:
    """states (B, L, D) as a Tensor of the model's dtype on `device` (a host array uploaded);
    ValueError naming `name` for another rank."""
    tensor = states if isinstance(states, Tensor) else asarray(np.asarray(states), device=device)
    if tensor.ndim != 3:
        raise ValueError(f"{name} must be (batch, tokens, features), got shape {tensor.shape}")
    return cast(tensor, dtype)
