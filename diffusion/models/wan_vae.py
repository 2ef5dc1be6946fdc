"""The Wan video VAE (diffusers' AutoencoderKLWan names): causal 3D convolutions over frames,
4x temporal compression; Wan 2.1's 8x spatial with 16 latent channels, Wan 2.2's (TI2V 5B)
16x with 48 (2x2 patches, residual down and up blocks), normalized per channel by the
config's `latents_mean` / `latents_std`.

A video is held frame-major, (T, C, H, W), so every 2D op (norms, attention, the spatial
resampling convolutions) sees the frames as its batch. A causal convolution (kt, kh, kw) is
the sum over its kt temporal taps of 2D convolutions of the frames shifted in time, with
zeros (or the previous chunk's last frames) in front. Encode and decode run chunk by chunk
as diffusers does (1 then 4 frames in, 1 latent frame out at a time), each causal convolution
keeping the last two frames it read: memory grows with a chunk, not the clip.

The networks are Qwen-Image's (its VAE is this one on one frame: qwen_image_vae) over causal
3D convolutions, with Wan 2.2's residual levels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, nn, take_slice

from . import qwen_image_vae as qwen
from .layers import Place
from .qwen_image_vae import _DEFAULTS, _clamp_unit
from .wan_vae_blocks import CausalConv3d, MidBlock, Resample, ResidualBlock, UpBlock, causal_conv
from .wan_vae_common import FlatGammas, LatentStatistics, checked_config, frames_video, video_frames
from .wan_vae_replay import decode_frames
from .wan_vae_residual import ResidualDownBlock, ResidualUpBlock, patchify, unpatchify

__all__ = ["AutoencoderKLWan"]


class Encoder(qwen.Encoder):
    """diffusers: `WanEncoder3d` (no attention scales): Qwen-Image's over causal 3D
    convolutions, Wan 2.2's levels each one residual down block."""

    # typed as the base's parts so that Qwen-Image 2.1's (qwen_image21_vae) may be 2D ones
    make_conv: Callable[[int, int, int, Place], Any] = staticmethod(causal_conv)
    residual_kind: type[qwen.ResidualBlock] = ResidualBlock
    resample_kind: type[qwen.Resample] = Resample
    mid_kind: type[qwen.MidBlock] = MidBlock
    residual_down_kind = ResidualDownBlock
    channels_key = "in_channels"

    def stage(self, cfg: dict[str, Any], in_dim: int, out_dim: int, temporal: bool | None,
              place: Place) -> list[nn.Module]:
        """Qwen-Image's level, or Wan 2.2's (`is_residual`) residual down block."""
        if not cfg["is_residual"]:
            return super().stage(cfg, in_dim, out_dim, temporal, place)
        return [self.residual_down_kind(in_dim, out_dim, cfg["num_res_blocks"], place=place,
                                        down=temporal is not None, temporal=bool(temporal))]


class Decoder(qwen.Decoder):
    """diffusers: `WanDecoder3d`: Qwen-Image's over causal 3D convolutions (its base dim
    `decoder_base_dim` where given), Wan 2.2's levels each one residual up block."""

    make_conv: Callable[[int, int, int, Place], Any] = staticmethod(causal_conv)
    up_kind: type[qwen.UpBlock] = UpBlock
    mid_kind: type[qwen.MidBlock] = MidBlock
    residual_up_kind = ResidualUpBlock
    channels_key = "out_channels"

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        super().__init__({**cfg, "base_dim": cfg.get("decoder_base_dim") or cfg["base_dim"]},
                         place)
        self.residual = bool(cfg["is_residual"])

    def stage(self, cfg: dict[str, Any], in_dim: int, out_dim: int, temporal: bool | None, *,
              first: bool, place: Place) -> nn.Module:
        """Qwen-Image's level, or Wan 2.2's (`is_residual`) residual up block."""
        if not cfg["is_residual"]:
            return super().stage(cfg, in_dim, out_dim, temporal, first=first, place=place)
        return self.residual_up_kind(in_dim, out_dim, cfg["num_res_blocks"],
                                     temporal=bool(temporal), up=temporal is not None,
                                     place=place)

    def forward(self, x: Tensor, *, first_chunk: bool = False) -> Tensor:
        x = self.mid_block(self.conv_in(x))
        for block in self.up_blocks:
            x = block(x, first_chunk=first_chunk) if self.residual else block(x)
        return self.conv_out(self.norm_out(x, silu=True))


def _reset(module: Any) -> None:
    """Forget every causal convolution's and resampler's frames under `module`."""
    if isinstance(module, (CausalConv3d, Resample)):
        module.reset()
    children = module if isinstance(module, nn.ModuleList) else vars(module).values()
    for child in children:
        if isinstance(child, nn.Module):
            _reset(child)



class AutoencoderKLWan(LatentStatistics, nn.Module):
    """Videos (B, 3, T, H, W) in [-1, 1], T = 1 + 4k <-> latents (B, z_dim, 1 + k, H / s,
    W / s), s = `spatial_factor` (8; 16 for Wan 2.2's).

    Config: `vae/config.json` of a Wan 2.1 folder, or of Wan 2.2 TI2V 5B's (`is_residual`,
    `patch_size` 2, z_dim 48). Parameter names are diffusers'
    (`decoder.up_blocks.0.resnets.0.conv1.weight` of shape (out, in, 3, 3, 3),
    `decoder.up_blocks.0.upsamplers.0.time_conv.weight`, ...). diffusers:
    `AutoencoderKLWan.decode(z).sample` and `.encode(x).latent_dist` (`.mean`, `.logvar`);
    `normalize` / `denormalize` over (B, z_dim, F, h, w) (LatentStatistics).
    """

    latent_rank = 5

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, "in_channels": 3, "out_channels": 3, "is_residual": False,
               "patch_size": None, **config}
        if cfg["patch_size"] not in (None, 1, 2) or bool(cfg["patch_size"] == 2) != bool(
                cfg["is_residual"]):
            raise ValueError(f"Wan VAE patch_size {cfg['patch_size']!r} with is_residual "
                             f"{cfg['is_residual']!r} is neither Wan 2.1's (none, False) nor "
                             "Wan 2.2's (2, True); fix the VAE's config.json")
        self.config = checked_config(cfg, "Wan", "Wan 2.1's VAE")
        place: Place = {"dtype": dtype, "device": device}
        z_dim = cfg["z_dim"]
        self.encoder = Encoder(cfg, place)
        self.quant_conv = CausalConv3d(2 * z_dim, 2 * z_dim, (1, 1, 1), place)
        self.post_quant_conv = CausalConv3d(z_dim, z_dim, (1, 1, 1), place)
        self.decoder = Decoder(cfg, place)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(bool(t) for t in self.config["temperal_downsample"])

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent along a side: 8 (Wan 2.1), 16 with 2x2 patches (Wan 2.2)."""
        return 2 ** (len(self.config["dim_mult"]) - 1) * (self.config["patch_size"] or 1)

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True,
                        dtype: Any = None, to_host: bool = False) -> None:
        """Load diffusers' AutoencoderKLWan tensors (5D kernels, 4D/5D gammas)."""
        super().load_state_dict(FlatGammas(state), strict=strict, dtype=dtype,
                                to_host=to_host)

    def decode(self, latents: Tensor, *, replay: bool = True) -> Tensor:
        """(B, z_dim, F, h, w) VAE latents (denormalized) -> (B, 3, 1 + 4 (F - 1), s h, s w)
        with s = `spatial_factor`, clamped to [-1, 1], decoded one latent frame at a time;
        from the third on, each replays the third's recording (wan_vae_replay; the same
        frames bit for bit as `replay=False`, which runs every one eagerly)."""
        if latents.ndim != 5:
            raise ValueError(f"Wan VAE latents must be (batch, {self.config['z_dim']}, frames, "
                             f"height, width), got shape {latents.shape}")
        videos = []
        for b in range(latents.shape[0]):
            frames = self.post_quant_conv(video_frames(latents, b))
            _reset(self.decoder)
            out = concatenate(decode_frames(self.decoder, frames, replay=replay), axis=0)
            _reset(self.decoder)
            if self.config["patch_size"] == 2:
                out = unpatchify(out, 2)
            videos.append(_clamp_unit(out))
        return frames_video(videos)

    def encode(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, T, H, W) in [-1, 1], T = 1 + 4k, H and W multiples of s = `spatial_factor`
        -> the posterior's mean and log variance, each (B, z_dim, 1 + k, H / s, W / s) (not
        normalized), encoded
        1 then 4 frames at a time. diffusers: `encode(x).latent_dist` (`.mean`, `.logvar`,
        the latter unclamped)."""
        step = self.temporal_factor
        if pixels.ndim != 5 or (pixels.shape[2] - 1) % step:
            raise ValueError(f"Wan VAE input must be (batch, 3, frames, height, width) with "
                             f"frames = 1 + {step}k, got shape {pixels.shape}")
        videos = []
        for b in range(pixels.shape[0]):
            frames = video_frames(pixels, b)
            if self.config["patch_size"] == 2:
                frames = patchify(frames, 2)
            _reset(self.encoder)
            bounds = [(0, 1)] + [(s, s + step) for s in range(1, frames.shape[0], step)]
            out = [self.encoder(take_slice(frames, start, stop, axis=0))
                   for start, stop in bounds]
            _reset(self.encoder)
            videos.append(self.quant_conv(concatenate(out, axis=0)))
        moments = frames_video(videos)
        z_dim = self.config["z_dim"]
        return (take_slice(moments, 0, z_dim, axis=1),
                take_slice(moments, z_dim, 2 * z_dim, axis=1))
