"""LTX-2's video VAE (diffusers' AutoencoderKLLTX2Video names): 4x4 pixel patches, causal 3D
convolutions, per-pixel RMS norms over the channels, space-to-depth down-samplers and
depth-to-space up-samplers, 32x spatial and 8x temporal compression to 128 latent channels
(the config's), a decoder that is not causal and, where the config says, conditioned on a
timestep; the latents normalised per channel by the checkpoint's `latents_mean` /
`latents_std`. The layers are in ltx2_vae_blocks.

A clip goes through whole; what bounds memory is diffusers' tiling
(hunyuan_video_vae_tiling): after `enable_tiling`, pictures larger than 512 px run as tiles
of 512 every 448, and with `framewise=True` (diffusers' `use_framewise_decoding`) clips of
more than 16 frames as tiles of 16 + 1 frames every 8, blended as diffusers blends them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, clip, concatenate, exp, nn, permute, take_slice

from . import hunyuan_video_vae_tiling as tiling
from .hunyuan_video_vae_blocks import CausalConv3d, TapState
from .layers import Place
from .ltx2_vae_blocks import STRIDES, DownBlock, MidBlock, TimeEmbedder, UpBlock, rms_silu
from .wan_vae_common import frames_video, video_frames

__all__ = ["AutoencoderKLLTX2Video"]

_DEFAULTS: dict[str, Any] = {  # diffusers' (the released LTX-2 config differs: see loader)
    "in_channels": 3, "out_channels": 3, "latent_channels": 128,
    "block_out_channels": (256, 512, 1024, 2048), "down_block_types": ("LTX2VideoDownBlock3D",) * 4,
    "decoder_block_out_channels": (256, 512, 1024), "layers_per_block": (4, 6, 6, 2, 2),
    "decoder_layers_per_block": (5, 5, 5, 5), "spatio_temporal_scaling": (True,) * 4,
    "decoder_spatio_temporal_scaling": (True,) * 3, "decoder_inject_noise": (False,) * 4,
    "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
    "upsample_type": ("spatiotemporal",) * 3, "upsample_residual": (True,) * 3,
    "upsample_factor": (2, 2, 2), "timestep_conditioning": False, "patch_size": 4,
    "patch_size_t": 1, "resnet_norm_eps": 1e-6, "scaling_factor": 1.0, "encoder_causal": True,
    "decoder_causal": True, "encoder_spatial_padding_mode": "zeros",
    "decoder_spatial_padding_mode": "reflect", "spatial_compression_ratio": None,
    "temporal_compression_ratio": None,
}
_PADS = {"zeros", "reflect", "replicate"}


def _each(value: Any, count: int) -> list[Any]:
    """A per-level setting: diffusers' bool for all `count` levels, or its list."""
    return [value] * count if isinstance(value, bool) else list(value)


def _checked(config: dict[str, Any]) -> dict[str, Any]:
    """The config with diffusers' defaults, the per-level bools expanded; ValueError in one
    line for what is not built (noise injection is random; a 2-frame patch; an up block that
    changes channels under timestep conditioning, which diffusers cannot run either)."""
    cfg = {**_DEFAULTS, **config}
    levels, up_levels = len(cfg["block_out_channels"]), len(cfg["decoder_block_out_channels"])
    cfg["spatio_temporal_scaling"] = _each(cfg["spatio_temporal_scaling"], levels)
    cfg["decoder_spatio_temporal_scaling"] = _each(cfg["decoder_spatio_temporal_scaling"],
                                                   up_levels)
    cfg["upsample_residual"] = _each(cfg["upsample_residual"], up_levels)
    problems = []
    if any(_each(cfg["decoder_inject_noise"], up_levels + 1)):
        problems.append("decoder_inject_noise (only False)")
    if cfg["patch_size_t"] != 1:
        problems.append(f"patch_size_t {cfg['patch_size_t']} (only 1)")
    if any(kind != "LTX2VideoDownBlock3D" for kind in cfg["down_block_types"]):
        problems.append(f"down_block_types {list(cfg['down_block_types'])}")
    if not set(cfg["downsample_type"][:levels]) <= set(STRIDES):
        problems.append(f"downsample_type {list(cfg['downsample_type'])}")
    if not set(cfg["upsample_type"][:up_levels]) <= set(STRIDES) - {"conv"}:
        problems.append(f"upsample_type {list(cfg['upsample_type'])}")
    for key in ("encoder_spatial_padding_mode", "decoder_spatial_padding_mode"):
        if cfg[key] not in _PADS:
            problems.append(f"{key} {cfg[key]!r}")
    if cfg["timestep_conditioning"] and any(a != b for a, b, _ in _up_levels(cfg)):
        problems.append("timestep_conditioning with an up block changing its channels")
    if problems:
        raise ValueError("LTX-2 video VAE config not supported: " + "; ".join(problems)
                         + "; give the vae/config.json of an LTX-2 model")
    return cfg


def _up_levels(cfg: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(in, out, factor) channels of each decoder up block, diffusers' arithmetic."""
    dims = list(cfg["decoder_block_out_channels"])[::-1]
    factors = list(cfg["upsample_factor"])[::-1]
    out, levels = dims[0], []
    for dim, factor in zip(dims, factors, strict=True):
        levels.append((out // factor, dim // factor, factor))
        out = dim // factor
    return levels


def _patch(frames: Tensor, p: int) -> Tensor:
    """Frames (T, C, H p, W p) -> (T, C p p, H, W), channel (c p + width offset) p + height
    offset: diffusers' `permute(0, 1, 3, 7, 5, 2, 4, 6)` patching."""
    count, channels, height, width = frames.shape
    split = frames.reshape(count, channels, height // p, p, width // p, p)
    return permute(split, (0, 1, 5, 3, 2, 4)).reshape(count, channels * p * p, height // p,
                                                       width // p)


def _unpatch(frames: Tensor, p: int) -> Tensor:
    """_patch's inverse: diffusers' decoder's `permute(0, 1, 5, 2, 6, 4, 7, 3)`."""
    count, channels, height, width = frames.shape
    split = frames.reshape(count, channels // (p * p), p, p, height, width)
    return permute(split, (0, 1, 4, 3, 5, 2)).reshape(count, channels // (p * p), height * p,
                                                       width * p)


class Encoder(nn.Module):
    """diffusers: `LTX2VideoEncoder3d`: its conv_out makes the mean's C channels and one
    log variance for all (returned (T, C + 1, h, w))."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        pad, eps, p = cfg["encoder_spatial_padding_mode"], cfg["resnet_norm_eps"], cfg["patch_size"]
        self.patch, self.causal = p, bool(cfg["encoder_causal"])
        latent, dims = cfg["latent_channels"], list(cfg["block_out_channels"])
        self.conv_in = CausalConv3d(cfg["in_channels"] * p * p, latent, 3, place,
                                    padding_mode=pad)
        ins = [latent, *dims[:-1]]
        self.down_blocks = nn.ModuleList([
            DownBlock(ins[i], dims[i], cfg["layers_per_block"][i],
                      cfg["downsample_type"][i] if cfg["spatio_temporal_scaling"][i] else None,
                      place, pad, eps) for i in range(len(dims))])
        self.mid_block = MidBlock(dims[-1], cfg["layers_per_block"][-1], place, pad,
                                  timestep=False, eps=eps)
        self.conv_out = CausalConv3d(dims[-1], latent + 1, 3, place, padding_mode=pad)

    def forward(self, frames: Tensor) -> Tensor:
        x = self.conv_in(_patch(frames, self.patch), causal=self.causal)
        for block in self.down_blocks:
            x = block(x, self.causal)
        x = self.mid_block(x, None, self.causal)
        return self.conv_out(rms_silu(x), causal=self.causal)


class Decoder(nn.Module):
    """diffusers: `LTX2VideoDecoder3d`; `embed` its timestep's embeddings once a video."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        pad, eps, p = cfg["decoder_spatial_padding_mode"], cfg["resnet_norm_eps"], cfg["patch_size"]
        self.patch, self.causal = p, bool(cfg["decoder_causal"])
        timestep = bool(cfg["timestep_conditioning"])
        dims = list(cfg["decoder_block_out_channels"])[::-1]
        layers = list(cfg["decoder_layers_per_block"])[::-1]
        scaling = list(cfg["decoder_spatio_temporal_scaling"])[::-1]
        residual = list(cfg["upsample_residual"])[::-1]
        self.conv_in = CausalConv3d(cfg["latent_channels"], dims[0], 3, place, padding_mode=pad)
        self.mid_block = MidBlock(dims[0], layers[0], place, pad, timestep=timestep, eps=eps)
        self.up_blocks = nn.ModuleList([
            UpBlock(in_dim, out_dim, layers[i + 1],
                    STRIDES[cfg["upsample_type"][i]] if scaling[i] else None, residual[i],
                    factor, place, pad, timestep=timestep, eps=eps)
            for i, (in_dim, out_dim, factor) in enumerate(_up_levels(cfg))])
        last = _up_levels(cfg)[-1][1]
        self.conv_out = CausalConv3d(last, cfg["out_channels"] * p * p, 3, place,
                                     padding_mode=pad)
        self.time_embedder = TimeEmbedder(2 * last, place) if timestep else None
        self.scale_shift_table = nn.parameter((2, last), **place) if timestep else None
        self.timestep_scale_multiplier = nn.parameter((), **place) if timestep else None

    def embed(self, timestep: float) -> list[Tensor] | None:
        """The mid block's, each up block's and the output norm's embeddings of `timestep`
        times timestep_scale_multiplier (in the weights' dtype, as diffusers multiplies)."""
        if self.time_embedder is None or self.timestep_scale_multiplier is None:
            return None
        multiplier = self.timestep_scale_multiplier.numpy()
        scaled = float(np.asarray(timestep, multiplier.dtype) * multiplier)
        blocks = [self.mid_block, *self.up_blocks, self]
        return [block.time_embedder(scaled) for block in blocks]

    def forward(self, z: Tensor, embeddings: list[Tensor] | None) -> Tensor:
        temb: list[Any] = [None] * (len(self.up_blocks) + 2) if embeddings is None else embeddings
        x = self.mid_block(self.conv_in(z, causal=self.causal), temb[0], self.causal)
        for block, block_temb in zip(self.up_blocks, temb[1:-1], strict=True):
            x = block(x, block_temb, self.causal)
        modulation = None
        if self.scale_shift_table is not None:
            channels = self.scale_shift_table.shape[1]
            both = temb[-1].reshape(2, channels) + self.scale_shift_table
            shift, scale = (take_slice(both, i, i + 1, axis=0).reshape(1, channels, 1, 1)
                            for i in range(2))
            modulation = (shift, scale)
        return _unpatch(self.conv_out(rms_silu(x, modulation), causal=self.causal), self.patch)


class AutoencoderKLLTX2Video(tiling.Tiling, nn.Module):
    """Videos (B, 3, 1 + 8 k, H, W) in [-1, 1], H and W multiples of 32, <-> latents
    (B, 128, 1 + k, H / 32, W / 32) (the ratios are the config's). Config: an LTX-2
    folder's `vae/config.json`; parameter names are diffusers' (`decoder.up_blocks.0.
    upsamplers.0.conv.conv.weight`, `latents_mean`, ...). diffusers:
    `AutoencoderKLLTX2Video.decode(z, temb).sample`, `.encode(x).latent_dist`, its tiling."""

    decode_drops_last = True  # diffusers' LTX-2 frame tiles drop their last frame

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        self.config = _checked(config)
        place: Place = {"dtype": dtype, "device": device}
        cfg, latent = self.config, self.config["latent_channels"]
        self.encoder = Encoder(cfg, place)
        self.decoder = Decoder(cfg, place)
        self.latents_mean = nn.parameter((latent,), **place)
        self.latents_std = nn.parameter((latent,), **place)
        downs = [kind for kind, on in zip(cfg["downsample_type"], cfg["spatio_temporal_scaling"],
                                          strict=False) if on]
        self.spatial_compression_ratio = cfg["spatial_compression_ratio"] or (
            cfg["patch_size"] * 2 ** sum(cfg["spatio_temporal_scaling"]))
        self.temporal_compression_ratio = cfg["temporal_compression_ratio"] or (
            2 ** sum(cfg["spatio_temporal_scaling"]))
        # what the encoder's reshapes need of a video: its own strides, whatever the config says
        self._space = cfg["patch_size"] * 2 ** sum(STRIDES[k][1] == 2 for k in downs)
        self._time = 2 ** sum(STRIDES[k][0] == 2 for k in downs)
        tiling.Tiling.__init__(self)
        self.use_framewise_decoding = self.use_framewise_encoding = False
        self.tile_sample_min_height = self.tile_sample_min_width = 512
        self.tile_sample_stride_height = self.tile_sample_stride_width = 448
        self.tile_sample_stride_num_frames = 8
        self._embeddings: list[Tensor] | None = None  # the video being decoded's timestep's

    @property
    def scaling_factor(self) -> float:
        return float(self.config["scaling_factor"])

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True,
                        dtype: Any = None, to_host: bool = False) -> None:
        """Load diffusers' AutoencoderKLLTX2Video tensors, each 3D conv kernel as its
        temporal taps (hunyuan_video_vae_blocks.Conv3d)."""
        super().load_state_dict(TapState(state), strict=strict, dtype=dtype, to_host=to_host)

    def enable_tiling(self, *, framewise: bool | None = None, **sizes: Any) -> None:
        """Spatial tiling on (diffusers' `enable_tiling(**sizes)`, its arguments), and with
        `framewise` tiling over frames on or off (diffusers' `use_framewise_decoding`, which
        its encode reads as well; None keeps it, off at first as diffusers'): 768x512x121
        then decodes 16 + 1 frames at a time."""
        super().enable_tiling(**sizes)
        if framewise is not None:
            self.use_framewise_decoding = self.use_framewise_encoding = framewise

    def decode_tile(self, latents: Tensor) -> Tensor:
        """Latent frames (T, C, h, w) -> frames (1 + 8 (T - 1), 3, 32 h, 32 w), in one go."""
        return self.decoder(latents, self._embeddings)

    def encode_tile(self, frames: Tensor) -> Tensor:
        """Frames (T, 3, H, W) -> (1 + (T - 1) // 8, C + 1, H / 32, W / 32): the mean, then
        the one log variance, in one go."""
        return self.encoder(frames)

    def _check(self, x: Any, channels: int, what: str) -> None:
        if not isinstance(x, Tensor) or x.ndim != 5 or x.shape[1] != channels:
            shape = getattr(x, "shape", type(x).__name__)
            raise ValueError(f"LTX-2 video VAE {what} must be a (batch, {channels}, frames, "
                             f"height, width) Tensor, got {shape}")

    def _timesteps(self, timestep: Any, batch: int) -> list[Any]:
        if not self.config["timestep_conditioning"]:
            return [None] * batch  # diffusers' decoder ignores it
        if timestep is None:
            raise ValueError("this LTX-2 video VAE's decoder is timestep-conditioned: pass "
                             "decode's timestep (the pipeline's decode_timestep, e.g. 0.05)")
        values = np.asarray(timestep, np.float64).reshape(-1)
        if values.size not in (1, batch):
            raise ValueError(f"LTX-2 video VAE timestep must be one number or one per video "
                             f"({batch}), got {values.size}")
        return list(np.broadcast_to(values, (batch,)))

    def decode(self, latents: Tensor, timestep: float | Sequence[float] | None = None
               ) -> Tensor:
        """(B, C, T, h, w) latents (denormalize'd) -> videos (B, 3, 1 + 8 (T - 1), 32 h,
        32 w), not clamped; `timestep` (one, or one a video) where the decoder is
        timestep-conditioned (ignored elsewhere). diffusers: `decode(z, temb).sample`."""
        self._check(latents, self.config["latent_channels"], "latents")
        videos = []
        for b, step in enumerate(self._timesteps(timestep, latents.shape[0])):
            self._embeddings = None if step is None else self.decoder.embed(step)
            videos.append(self.decode_frames(video_frames(latents, b)))
        self._embeddings = None
        return frames_video(videos)

    def moments(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, 1 + 8 k, H, W) in [-1, 1] -> the posterior's mean and log variance
        (unclamped), each (B, C, 1 + k, H / 32, W / 32). diffusers: `encode(x).latent_dist`'s
        `.mean` and `.logvar` (its clamped to [-30, 20])."""
        self._check(video, self.config["in_channels"], "input")
        frames, height, width = video.shape[2:]
        if (frames - 1) % self._time or height % self._space or width % self._space:
            raise ValueError(f"LTX-2 video VAE input must have 1 + {self._time} k frames and "
                             f"sides multiples of {self._space}, got {frames} frames of "
                             f"{height}x{width}; crop or pad the video")
        out = frames_video([self.encode_frames(video_frames(video, b))
                            for b in range(video.shape[0])])
        latent = self.config["latent_channels"]
        logvar = take_slice(out, latent, latent + 1, axis=1)
        return take_slice(out, 0, latent, axis=1), concatenate([logvar] * latent, axis=1)

    def encode(self, video: Tensor, *, noise: Any = None) -> Tensor:
        """(B, 3, 1 + 8 k, H, W) in [-1, 1] -> latents (B, C, 1 + k, H / 32, W / 32): the
        posterior's mean, or with `noise` (of the latents' shape) mean + std noise.
        diffusers: `encode(x).latent_dist.mode()`, `.sample()` (noise from its generator)."""
        mean, logvar = self.moments(video)
        if noise is None:
            return mean
        noise = asarray(noise, dtype=mean.dtype, device=mean.device)
        if noise.shape != mean.shape:
            raise ValueError(f"LTX-2 video VAE noise must have the latents' shape {mean.shape}, "
                             f"got {noise.shape}")
        return mean + exp(clip(logvar, -30.0, 20.0) * 0.5) * noise

    def _statistics(self) -> tuple[Tensor, Tensor]:
        shape = (1, -1, 1, 1, 1)
        return self.latents_mean.reshape(*shape), self.latents_std.reshape(*shape)

    def normalize(self, latents: Tensor) -> Tensor:
        """(z - latents_mean) * scaling_factor / latents_std: what the transformer reads.
        diffusers: `LTX2Pipeline._normalize_latents`."""
        mean, std = self._statistics()
        return (latents - mean) * self.scaling_factor / std

    def denormalize(self, latents: Tensor) -> Tensor:
        """latents * latents_std / scaling_factor + latents_mean: what `decode` reads.
        diffusers: `LTX2Pipeline._denormalize_latents`."""
        mean, std = self._statistics()
        return latents * std / self.scaling_factor + mean
