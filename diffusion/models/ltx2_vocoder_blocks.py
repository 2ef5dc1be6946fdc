"""LTX-2 vocoder layers (diffusers' pipelines/ltx2/vocoder.py names) on (B, C, L) signals:
SnakeBeta, the anti-aliased activation around it (2x upsampling by a Kaiser-windowed sinc,
the activation, the same low-pass and 2x downsampling: one kernel), HiFi-GAN residual blocks,
and the upsamplers' filters."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Kernel
from gpustd import Tensor, asarray, elementwise_kernel, nn, permute

from .layers import Place
from .ltx2_audio_blocks import run_as

__all__ = ["AntiAlias", "Conv1d", "ResBlock", "SnakeBeta", "hann_sinc_filter", "kaiser_sinc_filter",
           "leaky", "polyphase"]


@elementwise_kernel
def _snake(x, log_alpha, log_amplitude, eps):
    v = float(x)
    s = math.sin(v * math.exp(log_alpha))
    return v + s * s / (math.exp(log_amplitude) + eps)


@elementwise_kernel
def _leaky(x, slope):
    v = float(x)
    return v if v >= 0.0 else v * slope


def leaky(x: Tensor, slope: float) -> Tensor:
    """leaky_relu(x, slope), of x's dtype. torch: `F.leaky_relu(x, slope)`."""
    return run_as(_leaky, x, x, slope)


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> np.ndarray:
    """A Kaiser-windowed sinc low-pass of `kernel_size` taps summing to 1 (float64). diffusers:
    `kaiser_sinc_filter1d` (BigVGAN's)."""
    half = kernel_size // 2
    amplitude = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if amplitude > 50.0:
        beta = 0.1102 * (amplitude - 8.7)
    elif amplitude >= 21.0:
        beta = 0.5842 * (amplitude - 21) ** 0.4 + 0.07886 * (amplitude - 21.0)
    else:
        beta = 0.0
    time = (np.arange(-half, half) + 0.5 if kernel_size % 2 == 0
            else np.arange(kernel_size) - half).astype(np.float64)
    taps = 2 * cutoff * np.kaiser(kernel_size, beta) * np.sinc(2 * cutoff * time)
    return taps / taps.sum()


def hann_sinc_filter(ratio: int) -> tuple[np.ndarray, int, int]:
    """torchaudio-style resampling filter for `ratio`x upsampling (rolloff 0.99, 6 zero
    crossings, Hann window), with its (pad, crop) geometry. diffusers: `UpSample1d(window_type=
    "hann")`, the bandwidth extender's resampler."""
    rolloff, zeros = 0.99, 6
    width = math.ceil(zeros / rolloff)
    time = (np.arange(2 * width * ratio + 1) / ratio - width) * rolloff
    window = np.cos(np.clip(time, -zeros, zeros) * math.pi / zeros / 2) ** 2
    return np.sinc(time) * window * rolloff / ratio, width, 2 * width * ratio


def polyphase(taps: np.ndarray, ratio: int, pad: int, crop: int, channels: int
              ) -> tuple[np.ndarray, int, int]:
    """diffusers' UpSample1d (replicate-pad x by `pad`, ratio * conv_transpose1d with `taps`
    at stride `ratio`, drop `crop` outputs at the front and as many as the length grows at
    the back) as one correlation: output ratio * q + r is sum_d x[clamp(q + d)] g_r[d].
    Returns the depthwise weight [channels * ratio, 1, K'] (channel c's phase r at
    c * ratio + r) and the replicate padding (before, after) of x it reads."""
    offset = crop - ratio * pad
    ds = [d for r in range(ratio) for d in range(-len(taps), len(taps) + 1)
          if 0 <= r + offset - ratio * d < len(taps)]
    low, high = min(ds), max(ds)
    phases = np.zeros((ratio, high - low + 1))
    for r in range(ratio):
        for d in range(low, high + 1):
            tap = r + offset - ratio * d
            if 0 <= tap < len(taps):
                phases[r, d - low] = ratio * taps[tap]
    return np.tile(phases[None], (channels, 1, 1)).reshape(channels * ratio, 1, -1), -low, high


def upsample(x: Tensor, weight: Tensor, before: int, after: int, ratio: int) -> Tensor:
    """x (B, C, L) -> (B, C, ratio L) through `polyphase`'s weight."""
    b, c, length = x.shape
    phases = nn.conv1d(nn.pad(x, (before, after), mode="replicate"), weight, groups=c)
    return permute(phases.reshape(b, c, ratio, length), (0, 1, 3, 2)).reshape(b, c, -1)


class Conv1d(nn.Module):
    """1-D convolution, weight [out, in, K], zero padding. torch: nn.Conv1d."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, place: Place, *,
                 padding: int = 0, dilation: int = 1, bias: bool = True) -> None:
        self.padding, self.dilation = padding, dilation
        self.weight = nn.parameter((out_channels, in_channels, kernel), **place)
        self.bias = nn.parameter((out_channels,), **place) if bias else None

    def forward(self, x: Tensor, *, add: Tensor | None = None,
                negative_slope: float | None = None) -> Tensor:
        """add: a residual added last; negative_slope: leaky ReLU on conv + bias first."""
        return nn.conv1d(x, self.weight, self.bias, padding=self.padding,
                         dilation=self.dilation, add=add, negative_slope=negative_slope)


class SnakeBeta(nn.Module):
    """x + sin(x e^alpha)^2 / (e^beta + 1e-9) per channel (Snake: beta = alpha), parameters
    in log scale. diffusers: `SnakeBeta` (logscale)."""

    def __init__(self, channels: int, place: Place, *, beta: bool = True) -> None:
        self.alpha = nn.parameter((channels,), **place)
        self.beta = nn.parameter((channels,), **place) if beta else None

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha.reshape(1, -1, 1)
        amplitude = alpha if self.beta is None else self.beta.reshape(1, -1, 1)
        return run_as(_snake, x, x, alpha, amplitude, 1e-9)


class _Filter(nn.Module):
    """A stored low-pass (`filter` [1, 1, K], the checkpoint's values)."""

    def __init__(self, kernel: int, place: Place) -> None:
        self.filter = nn.parameter((1, 1, kernel), **place)


class AntiAlias(nn.Module):
    """2x upsampling, the activation, 2x downsampling, each filter a 12-tap Kaiser sinc with
    replicate padding, in one kernel (shaders/nn/anti_alias_snake.wgsl: each output sample
    computes the upsampled samples its low-pass reads; 6 dispatches unfused). diffusers:
    `AntiAliasAct1d` (`act`, `upsample.filter`, `downsample.filter`). The polyphase
    upsampling weight is derived from the stored filter at first use (`forget` after loading
    other weights)."""

    def __init__(self, act: SnakeBeta, channels: int, ratio: int, kernel: int,
                 place: Place) -> None:
        self.act, self.ratio, self.kernel, self.channels = act, ratio, kernel, channels
        self.upsample, self.downsample = _Filter(kernel, place), _Filter(kernel, place)
        self._dtype, self._device = place["dtype"], place["device"]
        self._weights: tuple[Tensor, int] | None = None

    def forget(self) -> None:
        self._weights = None

    def _built(self) -> tuple[Tensor, int]:
        if self._weights is None:
            k, r = self.kernel, self.ratio
            up, before, _ = polyphase(self.upsample.filter.numpy().astype(np.float64)
                                      .reshape(-1), r, k // r - 1, (k // r - 1) * r + (k - r) // 2,
                                      1)
            self._weights = asarray(up, dtype=self._dtype, device=self._device), before
        return self._weights

    def forward(self, x: Tensor) -> Tensor:
        up, before = self._built()
        _, c, length = x.shape
        if c != self.channels or x.dtype != self._dtype:
            raise ValueError(f"LTX-2 vocoder activation: expected (B, {self.channels}, L) of "
                             f"{np.dtype(self._dtype)}, got {x.shape} of {x.dtype}")
        out = Tensor.empty(x.shape, x.dtype, device=x.device)
        beta = self.act.alpha if self.act.beta is None else self.act.beta  # Snake: beta = alpha
        k = Kernel.cached("nn/anti_alias_snake", types={"T": x.dtype})
        k.dispatch(k.groups_for(out.size), x, up, self.downsample.filter, self.act.alpha, beta,
                   out, n=out.size, length=length, channels=c, ratio=self.ratio,
                   phase_taps=up.shape[-1], taps=self.kernel, before=before,
                   left=self.kernel // 2 + self.kernel % 2 - 1)
        return out


def activation(cfg: dict[str, Any], channels: int, place: Place, *, beta: bool) -> Any:
    """A resblock's activation: None for leaky ReLU (applied as a function), SnakeBeta
    (Snake without beta), wrapped in AntiAlias where the config says."""
    if cfg["act_fn"] == "leaky_relu":
        return None
    act = SnakeBeta(channels, place, beta=beta)
    if not cfg["antialias"]:
        return act
    return AntiAlias(act, channels, cfg["antialias_ratio"], cfg["antialias_kernel_size"], place)


class ResBlock(nn.Module):
    """For each dilation: x + conv2(act2(conv1(act1(x)))), conv1 dilated, both "same"
    padded. diffusers: `ResBlock` (`convs1`, `convs2`, `acts1`, `acts2`)."""

    def __init__(self, cfg: dict[str, Any], channels: int, kernel: int,
                 dilations: list[int], place: Place) -> None:
        self.slope = cfg["leaky_relu_negative_slope"]
        self.convs1 = nn.ModuleList([Conv1d(channels, channels, kernel, place,
                                            padding=d * (kernel - 1) // 2, dilation=d)
                                     for d in dilations])
        self.convs2 = nn.ModuleList([Conv1d(channels, channels, kernel, place,
                                            padding=(kernel - 1) // 2) for _ in dilations])
        snake_beta = cfg["act_fn"] == "snakebeta"
        acts = [[activation(cfg, channels, place, beta=snake_beta) for _ in dilations]
                for _ in range(2)]
        self.acts1 = nn.ModuleList(acts[0]) if acts[0][0] is not None else None
        self.acts2 = nn.ModuleList(acts[1]) if acts[1][0] is not None else None

    def forward(self, x: Tensor) -> Tensor:
        for i, (conv1, conv2) in enumerate(zip(self.convs1, self.convs2, strict=True)):
            if self.acts1 is None or self.acts2 is None:  # leaky ReLU: act2 in conv1's epilogue
                h = conv1(leaky(x, self.slope), negative_slope=self.slope)
            else:
                h = self.acts2[i](conv1(self.acts1[i](x)))
            x = conv2(h, add=x)
        return x
