"""The HunyuanVideo VAE (diffusers' AutoencoderKLHunyuanVideo names), which Kandinsky 5's
video models decode with too: causal 3D convolutions padded by replication, 4x temporal and
8x spatial compression to 16 latent channels, one-head attention over all frames of the
bottleneck (each frame seeing itself and the frames before), group norms over all frames.

A clip goes through whole, not chunk by chunk: what bounds memory is diffusers' tiling
(hunyuan_video_vae_tiling), over frames by default (more than 16 frames: tiles of 17 frames
every 12) and over space once `enable_tiling` is called (256 px tiles every 192), the tiles
blended as diffusers blends them. The layers are in hunyuan_video_vae_blocks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, clip, exp, nn

from . import hunyuan_video_vae_tiling as tiling
from .hunyuan_video_vae_blocks import CausalConv3d, Conv3d, MidBlock, Sampler, TapState, frames_norm
from .hunyuan_video_vae_calls import VideoCalls
from .layers import Place

__all__ = ["AutoencoderKLHunyuanVideo"]

_DEFAULTS: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 16,
    "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "act_fn": "silu",
    "norm_num_groups": 32, "scaling_factor": 0.476986, "spatial_compression_ratio": 8,
    "temporal_compression_ratio": 4, "mid_block_add_attention": True,
    "down_block_types": ("HunyuanVideoDownBlock3D",) * 4,
    "up_block_types": ("HunyuanVideoUpBlock3D",) * 4,
}


def _checked(config: dict[str, Any]) -> dict[str, Any]:
    """The config with diffusers' defaults; ValueError in one line for what diffusers does not
    build either (its decoder knows 4x temporal compression only)."""
    cfg = {**_DEFAULTS, **config}
    levels = len(cfg["block_out_channels"])
    problems = []
    if cfg["temporal_compression_ratio"] != 4:
        problems.append(f"temporal_compression_ratio {cfg['temporal_compression_ratio']} "
                        "(only 4)")
    if cfg["act_fn"] != "silu":
        problems.append(f"act_fn {cfg['act_fn']!r} (only 'silu')")
    for key, kind in (("down_block_types", "HunyuanVideoDownBlock3D"),
                      ("up_block_types", "HunyuanVideoUpBlock3D")):
        if list(cfg[key]) != [kind] * levels:
            problems.append(f"{key} {list(cfg[key])} (only {levels} x {kind!r})")
    ratio = cfg["spatial_compression_ratio"]
    if ratio < 1 or ratio & (ratio - 1):
        problems.append(f"spatial_compression_ratio {ratio} (a power of two)")
    if problems:
        raise ValueError("HunyuanVideo VAE config not supported: " + "; ".join(problems)
                         + "; give the vae/config.json of a HunyuanVideo or Kandinsky 5 model")
    return cfg


def _levels(cfg: dict[str, Any]) -> list[tuple[bool, bool]]:
    """(time, space) resampling of each level, the encoder's order (the decoder's reversed
    from the bottleneck up): diffusers' rule for 4x temporal compression."""
    levels = len(cfg["block_out_channels"])
    space = int(math.log2(cfg["spatial_compression_ratio"]))
    time = int(math.log2(cfg["temporal_compression_ratio"]))
    return [(levels - 1 - time <= i < levels - 1, i < space) for i in range(levels)]


class Encoder(nn.Module):
    """diffusers: `HunyuanVideoEncoder3D` (double_z)."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dims, groups = list(cfg["block_out_channels"]), cfg["norm_num_groups"]
        self.conv_in = CausalConv3d(cfg["in_channels"], dims[0], 3, place)
        self.down_blocks = nn.ModuleList([
            Sampler(dims[max(i - 1, 0)], dims[i], cfg["layers_per_block"], groups, place,
                    up=False, time=time, space=space)
            for i, (time, space) in enumerate(_levels(cfg))])
        self.mid_block = MidBlock(dims[-1], groups, place,
                                  attention=cfg["mid_block_add_attention"])
        self.conv_norm_out = nn.GroupNorm(groups, dims[-1], eps=1e-6, **place)
        self.conv_out = CausalConv3d(dims[-1], 2 * cfg["latent_channels"], 3, place)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(frames_norm(self.conv_norm_out, x, silu=True), channel_major=True)


class Decoder(nn.Module):
    """diffusers: `HunyuanVideoDecoder3D`."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dims, groups = list(cfg["block_out_channels"])[::-1], cfg["norm_num_groups"]
        self.conv_in = CausalConv3d(cfg["latent_channels"], dims[0], 3, place)
        self.mid_block = MidBlock(dims[0], groups, place,
                                  attention=cfg["mid_block_add_attention"])
        self.up_blocks = nn.ModuleList([
            Sampler(dims[max(i - 1, 0)], dims[i], cfg["layers_per_block"] + 1, groups, place,
                    up=True, time=time, space=space)
            for i, (time, space) in enumerate(_levels(cfg))])
        self.conv_norm_out = nn.GroupNorm(groups, dims[-1], eps=1e-6, **place)
        self.conv_out = CausalConv3d(dims[-1], cfg["out_channels"], 3, place)

    def forward(self, x: Tensor) -> Tensor:
        x = self.mid_block(self.conv_in(x))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(frames_norm(self.conv_norm_out, x, silu=True), channel_major=True)



class AutoencoderKLHunyuanVideo(tiling.Tiling, VideoCalls, nn.Module):
    """Videos (B, 3, T, H, W) in [-1, 1] <-> latents (B, 16, 1 + (T - 1) // 4, H / 8, W / 8)
    (the ratios are the config's). Config: `vae/config.json` of a HunyuanVideo or Kandinsky 5
    video folder; parameter names are diffusers' (`decoder.mid_block.attentions.0.to_q.weight`,
    `post_quant_conv.weight`, ...) but for the (out, in, 3, 3, 3) kernels, held as their
    temporal taps (`decoder.up_blocks.0.resnets.0.conv1.conv.taps.0.weight` (out, in, 3, 3),
    read through TapState: load_state_dict takes diffusers' tensors). diffusers:
    `AutoencoderKLHunyuanVideo.decode(z).sample`, `.encode(x).latent_dist` (`.mode()`,
    `.sample()`), with its tiling (Tiling: frames by default, space after `enable_tiling`)."""

    name = "HunyuanVideo VAE"

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        self.config = _checked(config)
        place: Place = {"dtype": dtype, "device": device}
        latent = self.config["latent_channels"]
        self.encoder = Encoder(self.config, place)
        self.decoder = Decoder(self.config, place)
        self.quant_conv = Conv3d(2 * latent, 2 * latent, 1, place)
        self.post_quant_conv = Conv3d(latent, latent, 1, place)
        self.spatial_compression_ratio = self.config["spatial_compression_ratio"]
        self.temporal_compression_ratio = self.config["temporal_compression_ratio"]
        tiling.Tiling.__init__(self)

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True,
                        dtype: Any = None, to_host: bool = False) -> None:
        """Load diffusers' AutoencoderKLHunyuanVideo tensors, each 3D kernel as its taps."""
        super().load_state_dict(TapState(state), strict=strict, dtype=dtype, to_host=to_host)

    @property
    def scaling_factor(self) -> float:
        """What the transformer's latents are the VAE's times (the pipeline divides by it)."""
        return float(self.config["scaling_factor"])

    def decode_tile(self, latents: Tensor) -> Tensor:
        """Latent frames (T, C, h, w) -> frames (1 + 4 (T - 1), 3, 8h, 8w), in one go."""
        return self.decoder(self.post_quant_conv(latents))

    def encode_tile(self, frames: Tensor) -> Tensor:
        """Frames (T, 3, H, W) -> the posterior's moments (1 + (T - 1) // 4, 2 C, H / 8,
        W / 8) (mean, then log variance), in one go."""
        return self.quant_conv(self.encoder(frames))

    def moments(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, T, H, W) in [-1, 1] -> the posterior's mean and log variance (unclamped),
        each (B, C, 1 + (T - 1) // 4, H / 8, W / 8). diffusers: `encode(x).latent_dist`'s
        `.mean` and `.logvar` (its clamped to [-30, 20])."""
        self._check(video, self.config["in_channels"], "input")
        return self._moments(video)

    def encode(self, video: Tensor, *, noise: Any = None) -> Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> latents (B, C, 1 + (T - 1) // 4, H / 8, W / 8): the
        posterior's mean, or with `noise` (of the latents' shape) the sample mean + std noise.
        diffusers: `encode(x).latent_dist.mode()`, `.sample()` (noise from its generator)."""
        mean, logvar = self.moments(video)
        if noise is None:
            return mean
        noise = asarray(noise, dtype=mean.dtype, device=mean.device)
        if noise.shape != mean.shape:
            raise ValueError(f"HunyuanVideo VAE noise must have the latents' shape {mean.shape}, "
                             f"got {noise.shape}")
        return mean + exp(clip(logvar, -30.0, 20.0) * 0.5) * noise
