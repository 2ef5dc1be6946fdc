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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, matmul, nn, take, take_slice

from .dit_layers import AdaLayerNormZero, CombinedTimestepTextProjEmbeddings, JointAttention
from .layers import Place
from .transformer_ops import cast, gated_linear, kept

__all__ = ["ByT5TextProjection", "Gather", "PromptText", "RefinerInput", "TokenRefiner",
           "device_states", "gather_tokens", "glyph_part", "join_plan", "kept_tokens",
           "prompt_text", "take_tokens"]


def kept_tokens(mask: Any, batch: int, length: int, name: str) -> list[np.ndarray]:
    """The indices of each sample's nonzero `mask` entries ((batch, length) host values);
    ValueError naming `name` for a mask of another shape."""
    keep = np.asarray(mask) != 0
    if keep.shape != (batch, length):
        raise ValueError(f"{name} must be (batch, tokens) = {(batch, length)}, got "
                         f"{keep.shape}; pass the text encoder's attention mask")
    return [np.flatnonzero(row) for row in keep]


@dataclass(frozen=True)
class Gather:
    """Which of (B, L, D) tokens `take_tokens` takes, N a sample: a run [start, stop) the
    same in every sample (a slice: no index; None: all of them), else `index` (B N,), the
    rows of the flattened (B L, D) tokens, uploaded once; `real`: the (B, N) flags of the
    real ones (None where none is padding)."""

    count: int
    run: tuple[int, int] | None
    index: Tensor | None
    real: np.ndarray | None


def gather_plan(rows: list[np.ndarray], length: int, device: Device) -> Gather:
    """The Gather of sample b's tokens rows[b] out of `length`, N the longest, the shorter
    padded with their first row. A slice where every sample keeps the same run of tokens
    (one prompt, its padding after it: no index upload)."""
    longest = max(len(r) for r in rows)
    first = rows[0]
    if len(first) and all(np.array_equal(r, first) for r in rows) \
            and (np.diff(first) == 1).all():
        whole = len(first) == length
        return Gather(longest, None if whole else (int(first[0]), int(first[-1]) + 1), None,
                      None)
    batch = len(rows)
    index = np.zeros((batch, longest), np.int64)
    real = np.zeros((batch, longest), bool)
    for b, r in enumerate(rows):
        index[b] = r[0] if len(r) else 0
        index[b, :len(r)] = r
        real[b, :len(r)] = True
    flat = (index + np.arange(batch)[:, None] * length).astype(np.int32).reshape(-1)
    return Gather(longest, None, asarray(flat, device=device), None if real.all() else real)


def take_tokens(states: Tensor, plan: Gather) -> Tensor:
    """(B, N, D): the tokens `plan` names of states (B, L, D). numpy: `states[b, rows[b]]`
    stacked."""
    if plan.index is None:
        return states if plan.run is None else take_slice(states, *plan.run, axis=1)
    batch, length, width = states.shape
    picked = take(states.reshape(batch * length, width), plan.index, axis=0)
    return picked.reshape(batch, plan.count, width)


def gather_tokens(states: Tensor, rows: list[np.ndarray]) -> tuple[Tensor, np.ndarray | None]:
    """(B, N, D): sample b's tokens rows[b] of states (B, L, D) (gather_plan's), and the
    (B, N) flags of the real ones (None where none is padding)."""
    plan = gather_plan(rows, states.shape[1], states.device)
    return take_tokens(states, plan), plan.real


@dataclass(frozen=True)
class RefinerInput:
    """The token refiner's prompt-only part (`TokenRefiner.prepare`): `proj_in` of the kept
    tokens (B, N, dim), the text projection of their mean (B, dim), the keys each query
    sees (uint32, broadcast to (B, 1, N, N); None: all)."""

    tokens: Tensor
    text: Tensor
    mask: Tensor | None


@dataclass(frozen=True)
class PromptText:
    """A prompt batch's part of every step that no timestep changes (the transformer's
    `prepare_text`, made once per prompt): the refiner's input, the projected tokens ahead
    of the refined ones in the text stream (None: none; HunyuanImage's ByT5 glyph tokens,
    HunyuanVideo 1.5's image and glyph tokens, concatenated), the plan joining them into
    the text stream (None: the refined tokens alone) and the stream's real flags (None: all
    real), and the blocks' key masks, kept per latent size."""

    batch: int
    refiner: RefinerInput
    prefix: Tensor | None
    join: Gather | None
    real: np.ndarray | None
    keys: dict[Any, Tensor] = field(default_factory=dict)

    def stream(self, refined: Tensor) -> Tensor:
        """The text stream (B, T, dim): the prefix's tokens, then the prompt's `refined` (B,
        N, dim) (diffusers' order; attention has none), joined by the plan."""
        if self.join is None:
            return refined
        assert self.prefix is not None
        return take_tokens(concatenate([self.prefix, refined], axis=1), self.join)

    def key_mask(self, tokens: int, device: Device) -> Tensor | None:
        """The blocks' key mask (B, 1, 1, T + tokens), uint32, of the text stream then
        `tokens` latent patches (None: every key real), made once per latent size."""
        if (real := self.real) is None:
            return None

        def make() -> Tensor:
            flags = np.concatenate([real, np.ones((self.batch, tokens), bool)], axis=1)
            return asarray(flags.astype(np.uint32).reshape(self.batch, 1, 1, -1), device=device)
        return kept(self.keys, tokens, make)


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
    `time_text_embed` of the timestep and the kept tokens' mean state; what no timestep
    changes `prepare`d once per prompt, the blocks every step (`forward`). diffusers:
    `HunyuanImageTokenRefiner`; `HunyuanVideo15TokenRefiner` is the same without the token-0
    rule (its caller drops a padding token 0 and passes first_padding all False)."""

    def __init__(self, text_dim: int, heads: int, head_dim: int, layers: int,
                 place: Place) -> None:
        dim = heads * head_dim
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(dim, text_dim, place,
                                                                  guidance=False)
        self.proj_in = nn.Linear(text_dim, dim, **place)
        self.token_refiner = RefinerBlocks(dim, heads, head_dim, layers, place)

    def prepare(self, states: Tensor, real: np.ndarray | None,
                first_padding: np.ndarray) -> RefinerInput:
        """What no timestep changes, made once per prompt: states (B, N, text_dim):
        gather_tokens' kept tokens (`real` its flags), in the model's dtype; first_padding
        (B,): whether a sample's token 0, kept at position 0 though its mask drops it, is
        padding."""
        batch, length, _ = states.shape
        real_tokens = np.ones((batch, length), bool) if real is None else real.copy()
        real_tokens[:, 0] &= ~first_padding
        # the mean of the real tokens' states, in float32 (diffusers' masked mean)
        weights = real_tokens / real_tokens.sum(axis=1, keepdims=True)
        pooled = matmul(asarray(weights.astype(np.float32)[:, None, :], device=states.device),
                        cast(states, np.float32)).reshape(batch, -1)
        text = self.time_text_embed.text_embedder(cast(pooled, states.dtype))
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
        return RefinerInput(self.proj_in(states), text, mask)

    def forward(self, prepared: RefinerInput, timestep: Any) -> Tensor:
        """`prepare`'s prompt refined at timestep (B,) (as the model's: host values, or a
        float32 Tensor of them)."""
        temb = self.time_text_embed.with_text(timestep, prepared.text)
        x = prepared.tokens
        for block in self.token_refiner.refiner_blocks:
            x = block(x, temb, prepared.mask)
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
    (B, L2) nonzero), and their real flags (None where all are): a join_plan part; None
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


def join_plan(parts: list[tuple[int, np.ndarray | None]], batch: int, device: Device
              ) -> Gather | None:
    """How PromptText.stream makes one text stream of parts of (N_i tokens, real flags or
    None): each sample's real tokens of every part in order, padded to the longest (None:
    one part, itself)."""
    if len(parts) == 1:
        return None
    flags = np.concatenate([np.ones((batch, count), bool) if real is None else real
                            for count, real in parts], axis=1)
    return gather_plan([np.flatnonzero(row) for row in flags], flags.shape[1], device)


def prompt_text(states: Any, rest: tuple[Any, ...], prepare: Callable[..., PromptText]
                ) -> PromptText:
    """A transformer's forward's text: encoder_hidden_states as given where it is
    prepare_text's PromptText (ValueError where the raw inputs in `rest` come beside it),
    else prepare(states, *rest)."""
    if not isinstance(states, PromptText):
        return prepare(states, *rest)
    if any(value is not None for value in rest):
        raise ValueError("encoder_hidden_states is prepare_text's PromptText, which holds the "
                         "masks, glyph and image states: pass None for those")
    return states


def device_states(states: Any, dtype: Any, device: Device, name: str) -> Tensor:
    """states (B, L, D) as a Tensor of the model's dtype on `device` (a host array uploaded);
    ValueError naming `name` for another rank."""
    tensor = states if isinstance(states, Tensor) else asarray(np.asarray(states), device=device)
    if tensor.ndim != 3:
        raise ValueError(f"{name} must be (batch, tokens, features), got shape {tensor.shape}")
    return cast(tensor, dtype)
