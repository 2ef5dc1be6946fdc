"""LTX-2's vocoder (diffusers' LTX2Vocoder names): the audio VAE's stereo mel spectrograms
(B, 2, T, 64) -> waveforms (B, 2, 240 T) at 24 kHz (the config's `output_sampling_rate`),
HiFi-GAN-like: a 7-tap conv to 1024 channels, five transposed-conv upsamplers (6, 5, 2, 2,
2x) each followed by the mean of three residual blocks (kernels 3, 7, 11), a 7-tap conv to
the two channels and tanh. LTX-2 ships leaky ReLUs; SnakeBeta activations with anti-aliased
resampling (ltx2_vocoder_blocks) are the layout of LTX-2.3's vocoder (ltx2_vocoder_bwe).

    vocoder = LTX2Vocoder(weights.config, device=device); vocoder.load_state_dict(weights)
    waveform = vocoder(vae.decode(latents))  # (B, 2, samples), float32 in [-1, 1]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, clip, elementwise_kernel, nn, permute, tanh

from .layers import Place
from .ltx2_audio_blocks import run_as
from .ltx2_vocoder_blocks import AntiAlias, Conv1d, ResBlock, SnakeBeta

__all__ = ["LTX2Vocoder"]

_DEFAULTS: dict[str, Any] = {
    "in_channels": 128, "hidden_channels": 1024, "out_channels": 2,
    "upsample_kernel_sizes": [16, 15, 8, 4, 4], "upsample_factors": [6, 5, 2, 2, 2],
    "resnet_kernel_sizes": [3, 7, 11], "resnet_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "act_fn": "leaky_relu", "leaky_relu_negative_slope": 0.1, "antialias": False,
    "antialias_ratio": 2, "antialias_kernel_size": 12, "final_act_fn": "tanh",
    "final_bias": True, "output_sampling_rate": 24000,
}
# diffusers' final leaky ReLU is nn.LeakyReLU() at torch's default slope, not the config's
_FINAL_SLOPE = 0.01


@elementwise_kernel
def _mean_leaky(total, scale, slope):
    v = float(total) * scale
    return v if v >= 0.0 else v * slope


def checked(cfg: dict[str, Any], what: str = "LTX-2 vocoder") -> dict[str, Any]:
    """The config with diffusers' defaults; ValueError in one line for what it cannot run."""
    cfg = {**_DEFAULTS, **cfg}
    problems = []
    if len(cfg["upsample_kernel_sizes"]) != len(cfg["upsample_factors"]):
        problems.append("upsample_kernel_sizes and upsample_factors differ in length")
    if len(cfg["resnet_kernel_sizes"]) != len(cfg["resnet_dilations"]):
        problems.append("resnet_kernel_sizes and resnet_dilations differ in length")
    if any(k % 2 == 0 for k in cfg["resnet_kernel_sizes"]):
        problems.append(f"resnet_kernel_sizes {cfg['resnet_kernel_sizes']} (odd only)")
    if any(s > k for s, k in zip(cfg["upsample_factors"], cfg["upsample_kernel_sizes"],
                                 strict=False)):
        problems.append("an upsample factor above its kernel size")
    if cfg["act_fn"] not in ("leaky_relu", "snake", "snakebeta"):
        problems.append(f"act_fn {cfg['act_fn']!r} (leaky_relu, snake or snakebeta)")
    elif cfg["act_fn"] == "leaky_relu" and cfg["antialias"]:
        problems.append("anti-aliased leaky ReLU (antialias with snake or snakebeta only)")
    if cfg["final_act_fn"] not in ("tanh", "clamp", None):
        problems.append(f"final_act_fn {cfg['final_act_fn']!r} (tanh, clamp or null)")
    if problems:
        raise ValueError(f"{what} config not supported: " + "; ".join(problems)
                         + "; give the vocoder/config.json of an LTX-2 model")
    return cfg


class ConvTranspose1d(nn.Module):
    """Transposed 1-D convolution, weight [in, out, K], padding (K - stride) // 2. torch:
    nn.ConvTranspose1d."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 place: Place) -> None:
        self.stride, self.padding = stride, (kernel - stride) // 2
        self.weight = nn.parameter((in_channels, out_channels, kernel), **place)
        self.bias = nn.parameter((out_channels,), **place)

    def forward(self, x: Tensor) -> Tensor:
        return nn.conv_transpose1d(x, self.weight, self.bias, stride=self.stride,
                                   padding=self.padding)


class LTX2Vocoder(nn.Module):
    """Mel (B, C, T, M) -> waveform (B, out_channels, T * prod(upsample_factors)) (module
    docstring). Config: `vocoder/config.json`; parameter names diffusers' (`conv_in.weight`,
    `upsamplers.0.weight` (in, out, K), `resnets.4.convs1.2.weight`,
    `resnets.0.acts1.0.act.alpha`, ...). diffusers: `LTX2Vocoder(mel)`."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        self.config = cfg = checked(config)
        place: Place = {"dtype": dtype, "device": device}
        self.act_fn, self.slope = cfg["act_fn"], cfg["leaky_relu_negative_slope"]
        self.per_stage = len(cfg["resnet_kernel_sizes"])
        channels = cfg["hidden_channels"]
        self.conv_in = Conv1d(cfg["in_channels"], channels, 7, place, padding=3)
        self.upsamplers: nn.ModuleList[ConvTranspose1d] = nn.ModuleList()
        self.resnets: nn.ModuleList[ResBlock] = nn.ModuleList()
        for factor, kernel in zip(cfg["upsample_factors"], cfg["upsample_kernel_sizes"],
                                  strict=True):
            self.upsamplers.append(ConvTranspose1d(channels, channels // 2, kernel, factor,
                                                   place))
            channels //= 2
            for size, dilations in zip(cfg["resnet_kernel_sizes"], cfg["resnet_dilations"],
                                       strict=True):
                self.resnets.append(ResBlock(cfg, channels, size, dilations, place))
        self.act_out = (None if self.act_fn == "leaky_relu" else AntiAlias(
            SnakeBeta(channels, place), channels, cfg["antialias_ratio"],
            cfg["antialias_kernel_size"], place))
        self.conv_out = Conv1d(channels, cfg["out_channels"], 7, place, padding=3,
                               bias=cfg["final_bias"])

    @property
    def dtype(self) -> np.dtype:
        """The layers' dtype (the mel it takes must have it)."""
        return self.conv_in.weight.dtype

    @property
    def sample_rate(self) -> int:
        """The waveform's sample rate (the config's output_sampling_rate)."""
        return int(self.config["output_sampling_rate"])

    @property
    def upsampling(self) -> int:
        """Waveform samples per mel frame."""
        return math.prod(self.config["upsample_factors"])

    def forget(self) -> None:
        """Drop the anti-alias filters' derived weights (after loading other weights)."""
        for module in _anti_aliases(self):
            module.forget()

    def load_state_dict(self, state: Any, **options: Any) -> None:
        super().load_state_dict(state, **options)
        self.forget()

    def forward(self, mel: Tensor) -> Tensor:
        """(B, C, T, M) mel (time before the mel bins, as the audio VAE decodes) ->
        (B, out_channels, T * upsampling), of mel's dtype."""
        channels = self.config["in_channels"]
        if not isinstance(mel, Tensor) or mel.ndim != 4 or mel.shape[1] * mel.shape[3] != channels:
            shape = getattr(mel, "shape", type(mel).__name__)
            raise ValueError(f"LTX-2 vocoder input must be a (batch, channels, frames, mel bins) "
                             f"Tensor with channels x mel bins = {channels}, got {shape}")
        b, c, t, m = mel.shape
        x = permute(mel, (0, 1, 3, 2)).reshape(b, c * m, t)
        leaky_path = self.act_fn == "leaky_relu"
        x = self.conv_in(x, negative_slope=self.slope if leaky_path else None)
        stages = len(self.upsamplers)
        for i, upsampler in enumerate(self.upsamplers):
            x = upsampler(x)
            outs = [self.resnets[j](x) for j in range(i * self.per_stage,
                                                       (i + 1) * self.per_stage)]
            total = outs[0]
            for out in outs[1:]:
                total = total + out
            # the mean, and on the leaky path the next stage's leaky ReLU (the final one at
            # torch's default slope) in the same pass
            slope = (self.slope if i < stages - 1 else _FINAL_SLOPE) if leaky_path else 1.0
            x = run_as(_mean_leaky, total, total, 1.0 / len(outs), slope)
        if self.act_out is not None:
            x = self.act_out(x)
        x = self.conv_out(x)
        if self.config["final_act_fn"] == "tanh":
            return tanh(x)
        if self.config["final_act_fn"] == "clamp":
            return clip(x, -1.0, 1.0)
        return x


def _anti_aliases(module: Any) -> list[AntiAlias]:
    found = [module] if isinstance(module, AntiAlias) else []
    children = (list(module) if isinstance(module, nn.ModuleList)
                else [v for k, v in vars(module).items() if not k.startswith("_")])
    for child in children:
        if isinstance(child, nn.Module):
            found += _anti_aliases(child)
    return found

