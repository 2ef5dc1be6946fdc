"""The Z-Image transformer's blocks (diffusers' ZImageTransformerBlock and its attention and
feed-forward), shared by the transformer (models.z_image) and its ControlNet
(models.z_image_controlnet)."""

from __future__ import annotations

import math
import typing
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, elementwise_kernel, nn

from .layers import Place
from .transformer_ops import Modulation, RMSNorm, cast, norm_rope

__all__ = ["ADALN", "CleanModulation", "ZImageTransformerBlock", "scaled"]

ADALN = 256  # the width of the timestep embedding every adaLN reads (min(dim, 256))

@elementwise_kernel
def scaled(x, scale):
    return x * (1.0 + scale)


@elementwise_kernel
def _tanh_gated_add(residual, gate, y):
    return float(residual) + math.tanh(float(gate)) * float(y)


@elementwise_kernel
def _tanh_gated_add_clipped(residual, gate, y):  # float16 out: no cast pass, the same bits
    out = float(residual) + math.tanh(float(gate)) * float(y)
    return np.float16(out if math.isnan(out) else min(max(out, -65504.0), 65504.0))


@elementwise_kernel
def _swiglu(gate, up):
    g = float(gate)
    return g / (1.0 + math.exp(-g)) * float(up)


@elementwise_kernel
def _swiglu_clipped(gate, up):  # float16 out: no cast pass, the same bits
    g = float(gate)
    out = g / (1.0 + math.exp(-g)) * float(up)
    return np.float16(out if math.isnan(out) else min(max(out, -65504.0), 65504.0))


@elementwise_kernel
def _picked_scaled(x, noisy, scale_noisy, scale_clean):
    return x * (1.0 + (scale_noisy if noisy > 0.5 else scale_clean))


@elementwise_kernel
def _picked_gated(residual, noisy, gate_noisy, gate_clean, y):
    gate = float(gate_noisy) if noisy > 0.5 else float(gate_clean)
    return float(residual) + math.tanh(gate) * float(y)


@elementwise_kernel
def _picked_gated_clipped(residual, noisy, gate_noisy, gate_clean, y):  # float16 as _gated
    gate = float(gate_noisy) if noisy > 0.5 else float(gate_clean)
    out = float(residual) + math.tanh(gate) * float(y)
    return np.float16(out if math.isnan(out) else min(max(out, -65504.0), 65504.0))


def _gated(residual: Tensor, gate: Tensor, y: Tensor) -> Tensor:
    """residual + tanh(gate) * y; a float16 stream clipped to +-65504 rather than turned to
    inf (Z-Image's bfloat16-trained activations overflow float16: ComfyUI and SD.Next clamp
    them the same way)."""
    kernel = _tanh_gated_add_clipped if residual.dtype == np.float16 else _tanh_gated_add
    return cast(typing.cast(Tensor, kernel(residual, gate, y)), residual.dtype)



def _picked_gated_add(residual: Tensor, noisy: Tensor, gates: tuple[Tensor, Tensor],
                      y: Tensor) -> Tensor:
    """`_gated` with each token's gate the noisy or the clean one, as `noisy` says."""
    kernel = _picked_gated_clipped if residual.dtype == np.float16 else _picked_gated
    return cast(typing.cast(Tensor, kernel(residual, noisy, *gates, y)), residual.dtype)


def _norm_scaled(norm: RMSNorm, x: Tensor, mods: Modulation, index: int) -> Tensor:
    """scaled(norm(x), mods[index]) in one pass, the scale read in place from the adaLN output
    (nn.rms_norm_modulate without a shift: the two passes' bits)."""
    return nn.rms_norm_modulate(x, norm.weight, None, mods.whole, norm.eps,
                                scale_at=index * mods.width)


class CleanModulation:
    """Z-Image Omni's clean timestep (t = 1): its embedding `temb` (1, 256), set by the
    transformer, and each modulated block's adaLN output of it, made on the block's first call
    (inside it, where a streamed block's weights are in place) and kept: fixed while the
    weights are, so made once a denoising (one kept for its steps) instead of every step and
    picture, as diffusers' `adaln_clean` is. Bit-identical: the same dispatches, run once.
    Also the per-token noise flags that pick between the two, uploaded once a denoising."""

    def __init__(self) -> None:
        self.temb: Tensor | None = None
        self._mods: dict[int, Modulation] = {}
        self._flags: dict[tuple[str, bytes], Tensor] = {}

    def flags(self, noisy: np.ndarray, dtype: Any, device: Device) -> Tensor:
        """The noise flags `noisy` (L,) (1: the step's timestep, 0: the clean one) as (1, L,
        1) `dtype` on `device`, kept by their values: a picture's are the same every step,
        and each upload waits for the queue."""
        key = (np.dtype(dtype).str, np.asarray(noisy, np.int64).tobytes())
        kept = self._flags.get(key)
        if kept is None:
            kept = self._flags[key] = asarray(
                np.asarray(noisy).reshape(1, -1, 1).astype(dtype), device=device)
        return kept

    def of(self, block: ZImageTransformerBlock) -> Modulation:
        """`block`'s (scale_msa, gate_msa, scale_mlp, gate_mlp) of the clean embedding."""
        mods = self._mods.get(id(block))
        if mods is None:
            assert self.temb is not None and block.adaLN_modulation is not None
            mods = self._mods[id(block)] = Modulation(block.adaLN_modulation[0](self.temb), 4)
        return mods


class ZImageAttention(nn.Module):
    """Self-attention with per-head RMS norms of q and k (eps 1e-5) and interleaved-pair RoPE;
    no biases. diffusers: `Attention` with `ZSingleStreamAttnProcessor`."""

    def __init__(self, dim: int, heads: int, place: Place, *, qk_norm: bool) -> None:
        self.heads, self.head_dim = heads, dim // heads
        self.to_q = nn.Linear(dim, dim, bias=False, **place)
        self.to_k = nn.Linear(dim, dim, bias=False, **place)
        self.to_v = nn.Linear(dim, dim, bias=False, **place)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, bias=False, **place)])
        if qk_norm:
            self.norm_q = RMSNorm(self.head_dim, 1e-5, place=place)
            self.norm_k = RMSNorm(self.head_dim, 1e-5, place=place)

    def _norm_rope(self, x: Tensor, name: str, rotary: tuple[Tensor, Tensor]) -> Tensor:
        return norm_rope(getattr(self, name, None), x, rotary, self.heads)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        q, k, v = nn.Linear.each(x, [self.to_q, self.to_k, self.to_v])  # --int8: x quantized once
        q, k = self._norm_rope(q, "norm_q", rotary), self._norm_rope(k, "norm_k", rotary)
        return self.to_out[0](nn.attention(q, k, v, heads=self.heads))


class ZImageFeedForward(nn.Module):
    """w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int, place: Place) -> None:
        self.w1 = nn.Linear(dim, hidden, bias=False, **place)
        self.w2 = nn.Linear(hidden, dim, bias=False, **place)
        self.w3 = nn.Linear(dim, hidden, bias=False, **place)

    def forward(self, x: Tensor) -> Tensor:
        """The product clipped to +-65504 under float16 (as `_gated`)."""
        kernel = _swiglu_clipped if x.dtype == np.float16 else _swiglu
        return self.w2(cast(typing.cast(Tensor, kernel(self.w1(x), self.w3(x))), x.dtype))


class ZImageTransformerBlock(nn.Module):
    """Sandwich-normed attention and feed-forward (an RMS norm before and after each); with
    `modulation`, the inputs scaled by 1 + scale and the residual writes gated by tanh(gate),
    from `adaLN_modulation(temb)`."""

    def __init__(self, cfg: dict[str, Any], place: Place, *, modulation: bool) -> None:
        dim, eps = cfg["dim"], cfg["norm_eps"]
        self.attention = ZImageAttention(dim, cfg["n_heads"], place, qk_norm=cfg["qk_norm"])
        # Bria FIBO 2's blocks round the width down to a multiple of 64 (its `ffn_hidden`)
        self.feed_forward = ZImageFeedForward(dim, cfg.get("ffn_hidden") or int(dim / 3 * 8),
                                              place)
        self.attention_norm1 = RMSNorm(dim, eps, place=place)
        self.ffn_norm1 = RMSNorm(dim, eps, place=place)
        self.attention_norm2 = RMSNorm(dim, eps, place=place)
        self.ffn_norm2 = RMSNorm(dim, eps, place=place)
        self.adaLN_modulation = (nn.ModuleList([nn.Linear(min(dim, ADALN), 4 * dim, **place)])
                                 if modulation else None)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], temb: Tensor | None,
                picked: tuple[CleanModulation, Tensor] | None = None) -> Tensor:
        """x (1, L, dim); temb (1, 256) for a modulated block. `picked`: Z-Image Omni's
        (the clean timestep's CleanModulation, noisy (1, L, 1) 1 or 0), each token modulated
        by `temb` where noisy, by the clean embedding where not (diffusers: `noise_mask`,
        `adaln_noisy`, `adaln_clean`)."""
        if self.adaLN_modulation is None:
            x = x + self.attention_norm2(self.attention(self.attention_norm1(x), rotary))
            return x + self.ffn_norm2(self.feed_forward(self.ffn_norm1(x)))
        assert temb is not None, "a modulated block needs the timestep embedding"
        if picked is not None:
            return self._picked(x, rotary, temb, *picked)
        # (scale_msa, gate_msa, scale_mlp, gate_mlp): the norms read their scales in place
        mods = Modulation(self.adaLN_modulation[0](temb), 4)
        attn = self.attention(_norm_scaled(self.attention_norm1, x, mods, 0), rotary)
        x = _gated(x, mods[1], self.attention_norm2(attn))
        ff = self.feed_forward(_norm_scaled(self.ffn_norm1, x, mods, 2))
        return _gated(x, mods[3], self.ffn_norm2(ff))

    def _picked(self, x: Tensor, rotary: tuple[Tensor, Tensor], temb: Tensor,
                clean: CleanModulation, noisy: Tensor) -> Tensor:
        assert self.adaLN_modulation is not None
        mods = [Modulation(self.adaLN_modulation[0](temb), 4), clean.of(self)]

        def scaled_by(normed: Tensor, index: int) -> Tensor:
            out = _picked_scaled(normed, noisy, mods[0][index], mods[1][index])
            return cast(typing.cast(Tensor, out), x.dtype)

        attn = self.attention(scaled_by(self.attention_norm1(x), 0), rotary)
        x = _picked_gated_add(x, noisy, (mods[0][1], mods[1][1]), self.attention_norm2(attn))
        ff = self.feed_forward(scaled_by(self.ffn_norm1(x), 2))
        return _picked_gated_add(x, noisy, (mods[0][3], mods[1][3]), self.ffn_norm2(ff))
