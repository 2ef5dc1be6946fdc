"""LTX-2's audio VAE (diffusers' AutoencoderKLLTX2Audio names): stereo log-mel
spectrograms (B, 2, T, 64) (16 kHz audio, a frame every 160 samples) <-> latents
(B, 8, (T + 3) // 4, 16), convolutions causal along time, pixel norms. Decoding T latent
frames gives 4T - 3 mel frames, which the vocoder (ltx2_vocoder) turns into a waveform.

The transformer sees the latents packed, (B, T, 8 * 16) (`pack`), and normalized per packed
feature by the VAE's `latents_mean` / `latents_std` (`normalize`, `denormalize`), as
diffusers' LTX2Pipeline does. The layers are in ltx2_audio_blocks.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, clip, exp, nn, permute, take_slice

from .layers import Place
from .ltx2_audio_blocks import (
    AXES,
    AttnBlock,
    CausalConv2d,
    Downsample,
    Norm,
    ResnetBlock,
    Upsample,
)

__all__ = ["AutoencoderKLLTX2Audio", "pack", "unpack"]

LATENT_DOWNSAMPLE_FACTOR = 4  # diffusers hard-codes it (time and mel both)

_DEFAULTS: dict[str, Any] = {
    "base_channels": 128, "output_channels": 2, "ch_mult": (1, 2, 4), "num_res_blocks": 2,
    "attn_resolutions": None, "in_channels": 2, "resolution": 256, "latent_channels": 8,
    "norm_type": "pixel", "causality_axis": "height", "dropout": 0.0,
    "mid_block_add_attention": False, "sample_rate": 16000, "mel_hop_length": 160,
    "is_causal": True, "mel_bins": 64, "double_z": True,
}


def _checked(config: dict[str, Any]) -> dict[str, Any]:
    """The config with diffusers' defaults; ValueError in one line for what diffusers does not
    build either."""
    cfg = {**_DEFAULTS, **config}
    problems = []
    if cfg["causality_axis"] not in AXES:
        problems.append(f"causality_axis {cfg['causality_axis']!r} (one of {', '.join(AXES)})")
    if cfg["norm_type"] not in ("pixel", "group"):
        problems.append(f"norm_type {cfg['norm_type']!r} ('pixel' or 'group')")
    elif cfg["norm_type"] == "group" and cfg["causality_axis"] != "none":
        problems.append("norm_type 'group' with a causal axis (diffusers refuses it too)")
    if problems:
        raise ValueError("LTX-2 audio VAE config not supported: " + "; ".join(problems)
                         + "; give the audio_vae/config.json of an LTX-2 model")
    return cfg


def _stage(cfg: dict[str, Any], place: Place, channels: list[int], attend: bool) -> Any:
    """A level's `block` resnets (channels[0] -> channels[1] -> ...) and their `attn`."""
    stage = nn.Namespace()
    norm, axis = cfg["norm_type"], cfg["causality_axis"]
    stage.block = nn.ModuleList([ResnetBlock(a, b, norm, axis, place)
                                 for a, b in itertools.pairwise(channels)])
    stage.attn = nn.ModuleList([AttnBlock(c, norm, place) for c in channels[1:]] if attend
                               else [])
    return stage


def _mid(cfg: dict[str, Any], place: Place, channels: int) -> Any:
    mid = nn.Namespace()
    norm, axis = cfg["norm_type"], cfg["causality_axis"]
    mid.block_1 = ResnetBlock(channels, channels, norm, axis, place)
    mid.attn_1 = AttnBlock(channels, norm, place) if cfg["mid_block_add_attention"] else None
    mid.block_2 = ResnetBlock(channels, channels, norm, axis, place)
    return mid


def _run_mid(mid: Any, x: Tensor) -> Tensor:
    x = mid.block_1(x)
    if mid.attn_1 is not None:
        x = mid.attn_1(x)
    return mid.block_2(x)


def _run_stage(stage: Any, x: Tensor) -> Tensor:
    for i, block in enumerate(stage.block):
        x = block(x)
        if len(stage.attn):
            x = stage.attn[i](x)
    return x


class Encoder(nn.Module):
    """diffusers: `LTX2AudioEncoder` (mel -> the posterior's mean and log variance)."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        base, mult, axis = cfg["base_channels"], cfg["ch_mult"], cfg["causality_axis"]
        attn = set(cfg["attn_resolutions"] or ())
        self.conv_in = CausalConv2d(cfg["in_channels"], base, 3, axis, place)
        self.down: nn.ModuleList[Any] = nn.ModuleList()
        channels, resolution = base, cfg["resolution"]
        for level, m in enumerate(mult):
            out = base * m
            stage = _stage(cfg, place, [channels] + [out] * cfg["num_res_blocks"],
                           resolution in attn)
            if level != len(mult) - 1:
                stage.downsample = Downsample(out, axis, place)
                resolution //= 2
            self.down.append(stage)
            channels = out
        self.mid = _mid(cfg, place, channels)
        self.norm_out = Norm(cfg["norm_type"], channels, place)
        z = cfg["latent_channels"] * (2 if cfg["double_z"] else 1)
        self.conv_out = CausalConv2d(channels, z, 3, axis, place)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for stage in self.down:
            x = _run_stage(stage, x)
            if hasattr(stage, "downsample"):
                x = stage.downsample(x)
        x = _run_mid(self.mid, x)
        return self.conv_out(self.norm_out(x, silu=True))


class Decoder(nn.Module):
    """diffusers: `LTX2AudioDecoder` (latents -> mel, cropped or zero-padded to 4T - 3
    frames and `mel_bins` bins)."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        self.cfg = cfg
        base, mult, axis = cfg["base_channels"], cfg["ch_mult"], cfg["causality_axis"]
        attn = set(cfg["attn_resolutions"] or ())
        channels = base * mult[-1]
        resolution = cfg["resolution"] // 2 ** (len(mult) - 1)
        self.conv_in = CausalConv2d(cfg["latent_channels"], channels, 3, axis, place)
        self.mid = _mid(cfg, place, channels)
        stages: list[Any] = []
        for level in reversed(range(len(mult))):
            out = base * mult[level]
            stage = _stage(cfg, place, [channels] + [out] * (cfg["num_res_blocks"] + 1),
                           resolution in attn)
            if level != 0:
                stage.upsample = Upsample(out, axis, place)
                resolution *= 2
            stages.insert(0, stage)
            channels = out
        self.up = nn.ModuleList(stages)
        self.norm_out = Norm(cfg["norm_type"], channels, place)
        self.conv_out = CausalConv2d(channels, cfg["output_channels"], 3, axis, place)

    def forward(self, z: Tensor) -> Tensor:
        frames = max(z.shape[2] * LATENT_DOWNSAMPLE_FACTOR - (LATENT_DOWNSAMPLE_FACTOR - 1), 1)
        bins = self.cfg["mel_bins"] or z.shape[3]
        x = _run_mid(self.mid, self.conv_in(z))
        for stage in reversed(list(self.up)):
            x = _run_stage(stage, x)
            if hasattr(stage, "upsample"):
                x = stage.upsample(x)
        x = self.conv_out(self.norm_out(x, silu=True))
        for axis, size in ((2, frames), (3, bins)):
            if x.shape[axis] > size:
                x = take_slice(x, 0, size, axis=axis)
        short_t, short_f = frames - x.shape[2], bins - x.shape[3]
        return nn.pad(x, (0, short_f, 0, short_t)) if short_t or short_f else x


def pack(latents: Tensor) -> Tensor:
    """(B, C, T, M) -> (B, T, C * M), the transformer's tokens. diffusers:
    `LTX2Pipeline._pack_audio_latents` (patch_size None)."""
    b, c, t, m = latents.shape
    return permute(latents, (0, 2, 1, 3)).reshape(b, t, c * m)


def unpack(tokens: Tensor, channels: int) -> Tensor:
    """(B, T, C * M) -> (B, C, T, M). diffusers: `LTX2Pipeline._unpack_audio_latents`."""
    b, t, features = tokens.shape
    return permute(tokens.reshape(b, t, channels, features // channels), (0, 2, 1, 3))


class AutoencoderKLLTX2Audio(nn.Module):
    """Mel spectrograms (B, 2, T, 64) <-> latents (B, 8, (T + 3) // 4, 16) (module
    docstring; sizes the config's). Config: `audio_vae/config.json` of an LTX-2 folder;
    parameter names diffusers' (`decoder.up.0.block.0.conv1.conv.weight`,
    `encoder.down.1.downsample.conv.weight`, `latents_mean`, ...). diffusers:
    `AutoencoderKLLTX2Audio.decode(z).sample`, `.encode(mel).latent_dist`."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        self.config = _checked(config)
        place: Place = {"dtype": dtype, "device": device}
        self.encoder = Encoder(self.config, place)
        self.decoder = Decoder(self.config, place)
        # per packed feature (channels x latent mel bins), over the training set
        features = self.config["base_channels"]
        self.latents_mean = nn.parameter((features,), np.float32, device)
        self.latents_std = nn.parameter((features,), np.float32, device)

    @property
    def dtype(self) -> np.dtype:
        """The layers' dtype (latents to decode and mel to encode must have it)."""
        return self.decoder.conv_in.conv.weight.dtype

    @property
    def sample_rate(self) -> int:
        """The audio's sample rate (the mel spectrogram's; the vocoder's output may differ)."""
        return int(self.config["sample_rate"])

    def _check(self, x: Any, channels: int, what: str) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != channels:
            shape = getattr(x, "shape", type(x).__name__)
            raise ValueError(f"LTX-2 audio VAE {what} must be a (batch, {channels}, frames, "
                             f"mel bins) Tensor, got {shape}")
        return x

    def decode(self, latents: Tensor) -> Tensor:
        """(B, 8, T, 16) latents (denormalized, unpacked) -> mel (B, 2, 4T - 3, 64), of the
        latents' dtype. diffusers: `decode(z).sample`."""
        return self.decoder(self._check(latents, self.config["latent_channels"], "latents"))

    def moments(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 2, T, 64) log-mel -> the posterior's mean and log variance (unclamped), each
        (B, 8, (T + 3) // 4, 16). diffusers: `encode(mel).latent_dist.mean`, `.logvar` (its
        clamped to [-30, 20])."""
        if not self.config["double_z"]:
            raise ValueError("LTX-2 audio VAE: this config (double_z false) has no log "
                             "variance; use encode(mel) for its latents")
        out = self.encoder(self._check(mel, self.config["in_channels"], "mel spectrograms"))
        latent = self.config["latent_channels"]
        return take_slice(out, 0, latent, axis=1), take_slice(out, latent, 2 * latent, axis=1)

    def encode(self, mel: Tensor, *, noise: Any = None) -> Tensor:
        """(B, 2, T, 64) log-mel -> latents (B, 8, (T + 3) // 4, 16): the posterior's mean, or
        with `noise` (of the latents' shape) mean + std noise. diffusers:
        `encode(mel).latent_dist.mode()`, `.sample()` (noise from its generator)."""
        if not self.config["double_z"]:
            return self.encoder(self._check(mel, self.config["in_channels"],
                                            "mel spectrograms"))
        mean, logvar = self.moments(mel)
        if noise is None:
            return mean
        noise = asarray(noise, dtype=mean.dtype, device=mean.device)
        if noise.shape != mean.shape:
            raise ValueError(f"LTX-2 audio VAE noise must have the latents' shape {mean.shape}, "
                             f"got {noise.shape}")
        return mean + exp(clip(logvar, -30.0, 20.0) * 0.5) * noise

    def _statistics(self, tokens: Any) -> tuple[Tensor, Tensor]:
        features = self.latents_mean.shape[0]
        if not isinstance(tokens, Tensor) or tokens.ndim != 3 or tokens.shape[2] != features:
            shape = getattr(tokens, "shape", type(tokens).__name__)
            raise ValueError(f"LTX-2 audio VAE packed latents must be a (batch, frames, "
                             f"{features}) Tensor (pack(latents)), got {shape}")
        return (self.latents_mean.astype(tokens.dtype), self.latents_std.astype(tokens.dtype))

    def normalize(self, tokens: Tensor) -> Tensor:
        """Packed latents (B, T, C * M) -> (x - latents_mean) / latents_std, the transformer's
        scale. diffusers: `LTX2Pipeline._normalize_audio_latents`."""
        mean, std = self._statistics(tokens)
        return (tokens - mean) / std

    def denormalize(self, tokens: Tensor) -> Tensor:
        """The transformer's packed latents -> the VAE's (x * latents_std + latents_mean).
        diffusers: `LTX2Pipeline._denormalize_audio_latents`."""
        mean, std = self._statistics(tokens)
        return tokens * std + mean
