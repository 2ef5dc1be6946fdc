"""numpy standing in for gpustd in the diffusion models' blocks, so that their wiring (which
norm, which residual, which modulation chunk, the embeddings and RoPE tables) runs on the host
and is compared with diffusers' torch modules on the CPU, with no device.

`stand_in(monkeypatch)` replaces the gpustd names that diffusion.models.transformer_ops,
dit_layers and flux use by numpy functions written from torch's definitions (F.layer_norm,
F.gelu, F.scaled_dot_product_attention, diffusers' get_timestep_embedding), and their compiled
elementwise kernels by the numpy expressions their docstrings give. A stand-in Linear holds
numpy weights, filled from a torch module's state dict by `load`. The device tests
(test_flux.py, test_sd3.py) run the real kernels.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np

from diffusion.models import dit_layers, flux, layers, transformer_ops, unet_blocks
from gpustd import nn as real_nn


class Linear(real_nn.Module):
    """y = x @ weight.T + bias with numpy weights (NaN until loaded, so that a weight no
    reference filled poisons the output)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype: Any = np.float32, device: Any = None) -> None:
        self.place = (np.dtype(dtype), device)  # what the model asked for, checked by tests
        self.weight = np.full((out_features, in_features), np.nan, dtype)
        self.bias = np.full((out_features,), np.nan, dtype) if bias else None

    def forward(self, x: np.ndarray, *, add_to: np.ndarray | None = None) -> np.ndarray:
        y = x @ self.weight.T
        if self.bias is not None:
            y = y + self.bias
        if add_to is None:
            return y.astype(x.dtype)
        add_to += y
        return add_to

    def plain(self) -> bool:
        """A float layer, unless a test made the layers --int8's (int8_input patched)."""
        return self.int8_input([self]) is None

    def gelu(self, x: np.ndarray, *, approximate: str = "none", out: Any = None,
             start: int = 0) -> np.ndarray:
        y = gelu(self(x), approximate=approximate)
        if out is None:
            return y
        out[..., start:start + y.shape[-1]] = y
        return out

    @staticmethod
    def each(x: np.ndarray, layers: list[Linear]) -> list[np.ndarray]:
        return [layer(x) for layer in layers]

    @staticmethod
    def int8_input(layers: list[Linear]) -> None:
        return None


def parameter(shape: tuple[int, ...], dtype: Any = np.float32, device: Any = None) -> np.ndarray:
    return np.full(shape, np.nan, dtype)


def silu(x: np.ndarray) -> np.ndarray:
    return (x / (1.0 + np.exp(-x))).astype(x.dtype)


def gelu(x: np.ndarray, *, approximate: str = "none") -> np.ndarray:
    """torch's F.gelu: tanh form or erf form; anything else refused as torch does."""
    if approximate == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)
        return (0.5 * x * (1.0 + np.tanh(inner))).astype(x.dtype)
    if approximate != "none":
        raise ValueError(f"approximate argument must be either none or tanh, not {approximate}")
    erf = np.vectorize(math.erf)
    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(x.dtype)


def layer_norm(x: np.ndarray, weight: Any = None, bias: Any = None,
               eps: float = 1e-5) -> np.ndarray:
    wide = x.astype(np.float64)
    mean = wide.mean(-1, keepdims=True)
    var = ((wide - mean) ** 2).mean(-1, keepdims=True)
    out = (wide - mean) / np.sqrt(var + eps)
    if weight is not None:
        out = out * weight + bias
    return out.astype(x.dtype)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, *, heads: int, mask: Any = None,
              scale: float | None = None, causal: bool = False) -> np.ndarray:
    """F.scaled_dot_product_attention over (B, L, heads * D) tensors; a mask keeps nonzero."""
    assert not causal

    def split(t: np.ndarray) -> np.ndarray:
        b, length, width = t.shape
        return t.reshape(b, length, heads, width // heads).transpose(0, 2, 1, 3)

    qh, kh, vh = split(q), split(k), split(v)
    scores = qh @ kh.transpose(0, 1, 3, 2) * (scale or 1.0 / math.sqrt(qh.shape[-1]))
    if mask is not None:
        scores = np.where(np.asarray(mask) != 0, scores, -np.inf)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    out = (scores / scores.sum(-1, keepdims=True)) @ vh
    b, _, length, _ = out.shape
    return out.transpose(0, 2, 1, 3).reshape(b, length, -1).astype(q.dtype)


def timestep_embedding(timesteps: Any, dim: int, flip_sin_to_cos: bool = False,
                       downscale_freq_shift: float = 1, scale: float = 1,
                       max_period: float = 10000, *, dtype: Any = np.float32,
                       device: Any = None) -> np.ndarray:
    """diffusers' get_timestep_embedding, in float32 as torch computes it."""
    t = np.asarray(timesteps, np.float32).reshape(-1)
    half = dim // 2
    exponent = (-math.log(max_period) * np.arange(half, dtype=np.float32)
                / np.float32(half - downscale_freq_shift))
    emb = scale * t[:, None] * np.exp(exponent)[None, :]
    emb = np.concatenate([np.sin(emb), np.cos(emb)], axis=-1)
    if flip_sin_to_cos:
        emb = np.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
    return emb.astype(dtype)


def take_slice(x: np.ndarray, start: int, stop: int, axis: int = 0) -> np.ndarray:
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def asarray(a: Any, dtype: Any = None, device: Any = None) -> np.ndarray:
    return np.array(a, dtype)


def concatenate(arrays: list[np.ndarray], axis: int = 0) -> np.ndarray:
    return np.concatenate(arrays, axis=axis)


def _torch(x: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(x))


class Conv2d(real_nn.Module):
    """torch's F.conv2d with numpy weights; `prologue` a GroupNorm.prologue's (norm, x,
    silu) applied to x first, `add` added to the output, `upsample` 2 reads x upsampled."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, *, dtype: Any = np.float32, device: Any = None) -> None:
        self.stride, self.padding = stride, padding
        self.place, self.upsampled = (np.dtype(dtype), device), None
        self.weight = np.full((out_channels, in_channels, kernel_size, kernel_size), np.nan,
                              dtype)
        self.bias = np.full((out_channels,), np.nan, dtype)

    def forward(self, x: np.ndarray, *, add: np.ndarray | None = None,
                prologue: Any = None, upsample: int = 1) -> np.ndarray:
        import torch.nn.functional as F

        if prologue is not None:
            norm, source, silu_after = prologue
            assert source is x, "a prologue is of the tensor the conv reads"
            x = norm(x, silu=silu_after)
        self.upsampled = upsample  # the last call's: 2 where no upsampled copy was made
        if upsample != 1:
            assert upsample == 2
            x = upsample_nearest2x(x)
        out = F.conv2d(_torch(x), _torch(self.weight), _torch(self.bias), stride=self.stride,
                       padding=self.padding).numpy()
        return out if add is None else out + add


class GroupNorm(real_nn.Module):
    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, *,
                 dtype: Any = np.float32, device: Any = None) -> None:
        self.num_groups, self.eps = num_groups, eps
        self.place = (np.dtype(dtype), device)
        self.weight = np.full((num_channels,), np.nan, dtype)
        self.bias = np.full((num_channels,), np.nan, dtype)

    def forward(self, x: np.ndarray, *, silu: bool = False) -> np.ndarray:
        import torch.nn.functional as F

        out = F.group_norm(_torch(x), self.num_groups, _torch(self.weight), _torch(self.bias),
                           self.eps).numpy()
        return globals()["silu"](out) if silu else out

    def prologue(self, x: np.ndarray, *, silu: bool = False) -> tuple:
        return (self, x, silu)


class LayerNorm(real_nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5, *, dtype: Any = np.float32,
                 device: Any = None) -> None:
        self.eps = eps
        self.place, self.readers = (np.dtype(dtype), device), None
        self.weight = np.full((dim,), np.nan, dtype)
        self.bias = np.full((dim,), np.nan, dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return layer_norm(x, self.weight, self.bias, self.eps)

    def quantized_for(self, x: np.ndarray, readers: list[Linear]) -> np.ndarray:
        self.readers = readers  # the last call's, checked by tests
        return self(x)


class GEGLU(real_nn.Module):
    """diffusers' GEGLU: value * gelu(gate) of proj(x)'s halves (value first)."""

    def __init__(self, dim_in: int, dim_out: int, *, dtype: Any = np.float32,
                 device: Any = None) -> None:
        self.readers = None
        self.proj = Linear(dim_in, 2 * dim_out, dtype=dtype, device=device)

    def forward(self, x: np.ndarray) -> np.ndarray:
        value, gate = np.split(self.proj(x), 2, axis=-1)
        return value * gelu(gate)

    def quantized_for(self, x: np.ndarray, readers: list[Linear]) -> np.ndarray:
        self.readers = readers
        return self(x)


def upsample_nearest2x(x: np.ndarray) -> np.ndarray:
    return x.repeat(2, axis=-2).repeat(2, axis=-1)


def pad(x: np.ndarray, padding: tuple[int, int, int, int]) -> np.ndarray:
    left, right, top, bottom = padding
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)])


def conv1x1_tokens(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    return Linear.forward(SimpleNamespace(weight=weight.reshape(len(weight), c), bias=bias),
                          x.reshape(n, c, h * w).transpose(0, 2, 1))


def tokens_conv1x1(tokens: np.ndarray, weight: np.ndarray, bias: np.ndarray, height: int,
                   width: int, *, add_to: np.ndarray | None = None) -> np.ndarray:
    n, _, c = tokens.shape
    layer = SimpleNamespace(weight=weight.reshape(len(weight), c), bias=bias)
    out = Linear.forward(layer, tokens).transpose(0, 2, 1).reshape(n, -1, height, width)
    if add_to is None:
        return out
    add_to += out
    return add_to


def layer_norm_modulate(x: np.ndarray, shift: np.ndarray, scale: np.ndarray,
                        eps: float = 1e-6, *, shift_at: int = 0, scale_at: int = 0) -> np.ndarray:
    """gpustd.nn.layer_norm_modulate: the norm rounded to x's dtype, then the modulation."""
    d = x.shape[-1]
    shift, scale = shift[..., shift_at:shift_at + d], scale[..., scale_at:scale_at + d]
    normed = layer_norm(x, eps=eps).astype(np.float32)
    return (normed * (1.0 + scale.astype(np.float32)) + shift.astype(np.float32)).astype(x.dtype)


def rms_norm_rope(x: np.ndarray, weight: Any = None, rotary: Any = None, *, heads: int = 1,
                  eps: float | None = 1e-6, halves: bool = False, out: Any = None,
                  start: int = 0, zero_centred: bool = False) -> np.ndarray:
    """gpustd.nn.rms_norm_rope from torch's definitions: per-head RMS norm (statistics in
    float32, rounded to x's dtype; the scale 1 + weight with `zero_centred`, Gemma's), then
    apply_rotary_emb's pair rotation (float32)."""
    width = x.shape[-1]
    d = width // heads
    y = x.reshape(*x.shape[:-1], heads, d).astype(np.float32)
    if eps is not None:
        y = y / np.sqrt((y * y).mean(axis=-1, keepdims=True) + eps)
    if weight is not None:
        y = y * (zero_centred + weight.astype(np.float32))
    y = y.astype(x.dtype).astype(np.float32)
    if rotary is not None:
        cos, sin = (t[start:start + x.shape[1]] for t in rotary)  # (L, 1, D)
        pairs = (y[..., :d // 2], y[..., d // 2:]) if halves else (y[..., 0::2], y[..., 1::2])
        partner = (np.concatenate([-pairs[1], pairs[0]], axis=-1) if halves
                   else np.stack([-pairs[1], pairs[0]], axis=-1).reshape(y.shape))
        y = y * cos + partner * sin
    result = y.astype(x.dtype).reshape(x.shape)
    if out is None:
        return result
    out[:, start:start + x.shape[1]] = result
    return out


NN = SimpleNamespace(Module=real_nn.Module, ModuleList=real_nn.ModuleList,
                     Identity=real_nn.Identity, Linear=Linear, parameter=parameter, silu=silu,
                     gelu=gelu, layer_norm=layer_norm, attention=attention,
                     timestep_embedding=timestep_embedding, Conv2d=Conv2d,
                     GroupNorm=GroupNorm, LayerNorm=LayerNorm, GEGLU=GEGLU,
                     upsample_nearest2x=upsample_nearest2x, pad=pad,
                     rms_norm_rope=rms_norm_rope, layer_norm_modulate=layer_norm_modulate,
                     linear_gated_add=lambda *args: None)  # float32 here: never fused

# transformer_ops' elementwise kernels (statistics in float32 as they compute them)
KERNELS = {
    "_modulate": lambda x, shift, scale: x * (1.0 + scale) + shift,
    "_gated_add": lambda residual, gate, y: residual + gate * y,
    "_gated_add_clipped": lambda residual, gate, y: np.clip(
        residual.astype(np.float32) + gate.astype(np.float32) * y.astype(np.float32),
        -65504.0, 65504.0).astype(np.float16),
}


def _empty(shape: tuple[int, ...], dtype: Any = np.float32, device: Any = None) -> np.ndarray:
    return np.full(shape, np.nan, dtype)  # a part never written poisons the output


def stand_in(monkeypatch: Any) -> None:
    """gpustd's names in transformer_ops, dit_layers, flux, layers and unet_blocks -> the
    numpy ones above."""
    for module in (transformer_ops, dit_layers, flux):
        monkeypatch.setattr(module, "nn", NN)
        monkeypatch.setattr(module, "Tensor", np.ndarray)
    for name in ("asarray", "take_slice"):
        monkeypatch.setattr(transformer_ops, name, globals()[name])
    for module in (dit_layers, flux):
        monkeypatch.setattr(module, "concatenate", concatenate)
        monkeypatch.setattr(module, "take_slice", take_slice)
    monkeypatch.setattr(flux, "empty", _empty)
    monkeypatch.setattr(transformer_ops, "empty", _empty)
    monkeypatch.setattr(flux, "put_slice", lambda out, value, start, axis: out.__setitem__(
        (slice(None),) * axis + (slice(start, start + value.shape[axis]),), value))
    for name, kernel in KERNELS.items():
        monkeypatch.setattr(transformer_ops, name, kernel)
    for module in (layers, unet_blocks):
        monkeypatch.setattr(module, "nn", NN)
    monkeypatch.setattr(layers, "permute", np.transpose)
    monkeypatch.setattr(layers, "take_slice", take_slice)
    monkeypatch.setattr(unet_blocks, "conv1x1_tokens", conv1x1_tokens)
    monkeypatch.setattr(unet_blocks, "tokens_conv1x1", tokens_conv1x1)
    monkeypatch.setattr(unet_blocks, "materialize", lambda weight: weight)


def load(module: Any, torch_module: Any) -> None:
    """Copy every tensor of a torch module's state dict into the stand-in's attribute of the
    same key path (float32); each must exist with the same shape."""
    for key, tensor in torch_module.state_dict().items():
        *path, last = key.split(".")
        owner = module
        for part in path:
            owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
        current = getattr(owner, last)
        value = tensor.detach().numpy().astype(np.float32)
        assert current is not None and current.shape == value.shape, key
        setattr(owner, last, value)
    left = [name for name, value in _arrays(module, "") if np.isnan(value).any()]
    assert not left, f"parameters no reference filled: {left}"


def _arrays(module: Any, prefix: str) -> Any:
    """(key, numpy array) of every parameter under a stand-in module."""
    children = (enumerate(module) if isinstance(module, real_nn.ModuleList)
                else vars(module).items())
    for name, value in children:
        if isinstance(value, np.ndarray):
            yield f"{prefix}{name}", value
        elif isinstance(value, real_nn.Module):
            yield from _arrays(value, f"{prefix}{name}.")
