"""LTX-2.3's vocoder with bandwidth extension (diffusers' LTX2VocoderWithBWE names): a
SnakeBeta LTX2Vocoder makes 16 kHz audio from the VAE's mel spectrograms, a causal STFT
(a strided conv with the checkpoint's windowed DFT basis) and the checkpoint's mel filterbank
re-analyse it, a second LTX2Vocoder (`bwe_generator`) turns that log-mel into the high band,
added to the 16 kHz audio upsampled 3x by a Hann-windowed sinc, clamped to [-1, 1]: 48 kHz.

`ltx2_vocoder(weights)` builds whichever class a vocoder/config.json names.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, clip, elementwise_kernel, matmul, nn, permute, take_slice

from .layers import Place
from .ltx2_audio_blocks import run_as
from .ltx2_vocoder import LTX2Vocoder
from .ltx2_vocoder_blocks import hann_sinc_filter, polyphase, upsample

__all__ = ["LTX2VocoderWithBWE", "MelSTFT", "ltx2_vocoder"]

_STAGE = ("hidden_channels", "out_channels", "upsample_kernel_sizes", "upsample_factors",
          "resnet_kernel_sizes", "resnet_dilations", "act_fn", "leaky_relu_negative_slope",
          "antialias", "antialias_ratio", "antialias_kernel_size", "final_act_fn",
          "final_bias", "in_channels")
_DEFAULTS: dict[str, Any] = {
    "in_channels": 128, "hidden_channels": 1536, "out_channels": 2,
    "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4], "upsample_factors": [5, 2, 2, 2, 2, 2],
    "resnet_kernel_sizes": [3, 7, 11], "resnet_dilations": [[1, 3, 5]] * 3,
    "act_fn": "snakebeta", "leaky_relu_negative_slope": 0.1, "antialias": True,
    "antialias_ratio": 2, "antialias_kernel_size": 12, "final_act_fn": None,
    "final_bias": False, "bwe_in_channels": 128, "bwe_hidden_channels": 512,
    "bwe_out_channels": 2, "bwe_upsample_kernel_sizes": [12, 11, 4, 4, 4],
    "bwe_upsample_factors": [6, 5, 2, 2, 2], "bwe_resnet_kernel_sizes": [3, 7, 11],
    "bwe_resnet_dilations": [[1, 3, 5]] * 3, "bwe_act_fn": "snakebeta",
    "bwe_leaky_relu_negative_slope": 0.1, "bwe_antialias": True, "bwe_antialias_ratio": 2,
    "bwe_antialias_kernel_size": 12, "bwe_final_act_fn": None, "bwe_final_bias": False,
    "filter_length": 512, "hop_length": 80, "window_length": 512, "num_mel_channels": 64,
    "input_sampling_rate": 16000, "output_sampling_rate": 48000,
}


@elementwise_kernel
def _magnitude(real, imag):
    return math.sqrt(float(real) * float(real) + float(imag) * float(imag))


@elementwise_kernel
def _log_clamped(x):
    return math.log(max(float(x), 1e-5))


class MelSTFT(nn.Module):
    """Causal log-mel spectrogram: left zero padding of window - hop samples, the STFT as a
    conv with `stft_fn.forward_basis` [2F, 1, filter_length] at stride hop, magnitudes,
    `mel_basis` [mels, F], log(max(mel, 1e-5)). diffusers: `MelSTFT` (its `CausalSTFT`'s
    `inverse_basis` is stored, never used)."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        length, self.hop = cfg["filter_length"], cfg["hop_length"]
        self.left = max(0, cfg["window_length"] - self.hop)
        freqs = length // 2 + 1
        self.stft_fn = nn.Namespace()
        self.stft_fn.forward_basis = nn.parameter((2 * freqs, 1, length), **place)
        self.stft_fn.inverse_basis = nn.parameter((2 * freqs, 1, length), **place)
        self.mel_basis = nn.parameter((cfg["num_mel_channels"], freqs), **place)

    def forward(self, waveform: Tensor) -> Tensor:
        """(N, samples) -> log-mel (N, mels, frames)."""
        n, samples = waveform.shape
        x = nn.pad(waveform.reshape(n, 1, samples), (self.left, 0))
        spec = nn.conv1d(x, self.stft_fn.forward_basis, stride=self.hop)
        freqs = spec.shape[1] // 2
        magnitude = run_as(_magnitude, spec, take_slice(spec, 0, freqs, axis=1),
                           take_slice(spec, freqs, 2 * freqs, axis=1))
        return run_as(_log_clamped, spec, matmul(self.mel_basis, magnitude))


def _stage(cfg: dict[str, Any], prefix: str, rate: int) -> dict[str, Any]:
    return {**{key: cfg[prefix + key] for key in _STAGE}, "output_sampling_rate": rate}


class LTX2VocoderWithBWE(nn.Module):
    """Mel (B, C, T, M) -> 48 kHz waveform (B, C, 3 x the 16 kHz vocoder's samples) (module
    docstring). Config: an LTX-2.3 `vocoder/config.json`; parameter names diffusers'
    (`vocoder.conv_in.weight`, `bwe_generator.resnets.0.acts1.0.act.alpha`,
    `mel_stft.mel_basis`, `mel_stft.stft_fn.forward_basis`). diffusers:
    `LTX2VocoderWithBWE(mel)`."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        self.config = cfg = {**_DEFAULTS, **config}
        rate_in, rate_out = cfg["input_sampling_rate"], cfg["output_sampling_rate"]
        if rate_out % rate_in:
            raise ValueError(f"LTX-2 BWE vocoder config not supported: output_sampling_rate "
                             f"{rate_out} is not a multiple of input_sampling_rate {rate_in}; "
                             "give the vocoder/config.json of an LTX-2.3 model")
        place: Place = {"dtype": dtype, "device": device}
        self.vocoder = LTX2Vocoder(_stage(cfg, "", rate_in), **place)
        self.bwe_generator = LTX2Vocoder(_stage(cfg, "bwe_", rate_out), **place)
        self.mel_stft = MelSTFT(cfg, place)
        self.ratio = rate_out // rate_in
        taps, pad, crop = hann_sinc_filter(self.ratio)
        channels = cfg["out_channels"]
        weight, self._before, self._after = polyphase(taps, self.ratio, pad, crop, channels)
        self._resampler = asarray(weight, dtype=dtype, device=device)

    @property
    def dtype(self) -> np.dtype:
        """The layers' dtype (the mel it takes must have it)."""
        return self.vocoder.dtype

    @property
    def sample_rate(self) -> int:
        """The waveform's sample rate (the config's output_sampling_rate)."""
        return int(self.config["output_sampling_rate"])

    def load_state_dict(self, state: Any, **options: Any) -> None:
        super().load_state_dict(state, **options)
        self.vocoder.forget()
        self.bwe_generator.forget()

    def forward(self, mel: Tensor) -> Tensor:
        x = self.vocoder(mel)
        b, c, samples = x.shape
        short = -samples % self.config["hop_length"]
        if short:
            x = nn.pad(x, (0, short))
        log_mel = self.mel_stft(x.reshape(b * c, x.shape[2]))
        log_mel = permute(log_mel.reshape(b, c, *log_mel.shape[1:]), (0, 1, 3, 2))
        residual = self.bwe_generator(log_mel)
        skip = upsample(x, self._resampler, self._before, self._after, self.ratio)
        out = clip(residual + skip, -1.0, 1.0)
        return take_slice(out, 0, samples * self.ratio, axis=2)


def ltx2_vocoder(weights: Any, *, dtype: Any = np.float32,
                 device: Device | None = None) -> LTX2Vocoder | LTX2VocoderWithBWE:
    """The vocoder a loader's weights (`load_ltx2_vocoder`) describe, built and loaded:
    LTX2VocoderWithBWE where the config's `_class_name` says so, else LTX2Vocoder."""
    kind = weights.config.get("_class_name", "LTX2Vocoder")
    cls = LTX2VocoderWithBWE if kind == "LTX2VocoderWithBWE" else LTX2Vocoder
    model = cls(weights.config, dtype=dtype, device=device)
    model.load_state_dict(weights)
    return model
