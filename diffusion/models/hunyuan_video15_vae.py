"""The HunyuanVideo 1.5 VAE (diffusers' AutoencoderKLHunyuanVideo15 names): causal 3D
convolutions padded by replication, RMS norms, 16x spatial and 4x temporal compression to 32
latent channels through samplers that move pixels and frames into channels (each with a
parameter-free shortcut), one-head attention over all frames of the bottleneck (each frame
seeing itself and the frames before). The layers are in hunyuan_video15_vae_blocks.

A clip goes through whole: what bounds memory is diffusers' spatial tiling, after
`enable_tiling` (256 px tiles every 192, blended over 64 px as diffusers blends them;
hunyuan_video_vae_tiling.spatial_tiles). diffusers tiles nothing in time for this VAE, nor
does this one. The scaling factor is the pipeline's to apply, as in diffusers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, clip, exp, nn

from .hunyuan_video15_vae_blocks import Level, MidBlock, group_mean, repeat_channels
from .hunyuan_video_vae_blocks import CausalConv3d, TapState
from .hunyuan_video_vae_calls import VideoCalls
from .hunyuan_video_vae_tiling import spatial_tiles
from .layers import Place
from .qwen_image_vae import RMSNorm
from .wan_vae_common import FlatGammas

__all__ = ["AutoencoderKLHunyuanVideo15"]

_DEFAULTS: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 32,
    "block_out_channels": (128, 256, 512, 1024, 1024), "layers_per_block": 2,
    "spatial_compression_ratio": 16, "temporal_compression_ratio": 4,
    "downsample_match_channel": True, "upsample_match_channel": True,
    "scaling_factor": 1.03682,
}
Spec = tuple[int, int, int | None, bool]  # a level's (in, out, sampler's out, in time)


def _log2(value: int) -> int:
    return int(math.log2(value))


def _plans(cfg: dict[str, Any]) -> tuple[list[Spec], list[Spec]]:
    """Each encoder and decoder level's channels and sampler, by diffusers' rules: the
    encoder downsamples its first log2(spatial) levels, the last log2(temporal) of them in
    time too; the decoder upsamples its first max(...) levels, the first log2(temporal) in
    time too."""
    dims, space, time = (list(cfg["block_out_channels"]), _log2(cfg["spatial_compression_ratio"]),
                         _log2(cfg["temporal_compression_ratio"]))
    down: list[Spec] = []
    current = dims[0]
    for i, dim in enumerate(dims):
        sampler = (dims[i + 1] if cfg["downsample_match_channel"] else dim) if i < space else None
        down.append((current, dim, sampler, space - time <= i < space))
        current = sampler or dim
    up: list[Spec] = []
    dims = dims[::-1]
    current = dims[0]
    for i, dim in enumerate(dims):
        sampler = ((dims[i + 1] if cfg["upsample_match_channel"] else dim)
                   if i < space or i < time else None)
        up.append((current, dim, sampler, i < time))
        current = sampler or dim
    return down, up


def _checked(config: dict[str, Any]) -> dict[str, Any]:
    """The config with diffusers' defaults; ValueError in one line for what diffusers cannot
    build or run either."""
    cfg = {**_DEFAULTS, **config}
    problems = []
    dims, latent = list(cfg["block_out_channels"]), cfg["latent_channels"]
    for key in ("spatial_compression_ratio", "temporal_compression_ratio"):
        ratio = cfg[key]
        if ratio < 1 or ratio & (ratio - 1):
            problems.append(f"{key} {ratio} (a power of two)")
    if not problems:
        space = _log2(cfg["spatial_compression_ratio"])
        if cfg["temporal_compression_ratio"] > cfg["spatial_compression_ratio"]:
            problems.append("temporal_compression_ratio above spatial_compression_ratio")
        elif space >= len(dims):
            problems.append(f"spatial_compression_ratio {2 ** space} needs more than "
                            f"{len(dims)} block_out_channels")
    if dims[-1] % (2 * latent):
        problems.append(f"block_out_channels[-1] {dims[-1]} (a multiple of 2 x "
                        f"latent_channels {latent})")
    if not problems:
        down, up = _plans(cfg)
        for _, dim, out, time in down:
            if out and (out % (8 if time else 4) or (8 if time else 4) * dim % out):
                problems.append(f"a downsampler {dim} -> {out} channels")
        for _, dim, out, time in up:
            if out and ((8 if time else 4) * out % dim or
                        (time and (8 * out // dim) % 2)):
                problems.append(f"an upsampler {dim} -> {out} channels")
    if problems:
        raise ValueError("HunyuanVideo 1.5 VAE config not supported: " + "; ".join(problems)
                         + "; give the vae/config.json of a HunyuanVideo 1.5 model")
    return cfg


class Encoder(nn.Module):
    """diffusers: `HunyuanVideo15Encoder3D`: its output plus its last features' channel
    groups averaged to the 2 C moments."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dims, count = list(cfg["block_out_channels"]), cfg["layers_per_block"]
        self.moments = 2 * cfg["latent_channels"]
        self.conv_in = CausalConv3d(cfg["in_channels"], dims[0], 3, place)
        self.down_blocks = nn.ModuleList([
            Level(in_dim, out_dim, count, place, up=False, sampler_dim=sampler, time=time)
            for in_dim, out_dim, sampler, time in _plans(cfg)[0]])
        self.mid_block = MidBlock(dims[-1], place)
        self.norm_out = RMSNorm(dims[-1], place)
        self.conv_out = CausalConv3d(dims[-1], self.moments, 3, place)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(self.norm_out(x, silu=True), add=group_mean(x, self.moments))


class Decoder(nn.Module):
    """diffusers: `HunyuanVideo15Decoder3D`: conv_in plus the latents' channels repeated."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dims, count = list(cfg["block_out_channels"])[::-1], cfg["layers_per_block"] + 1
        self.latent = cfg["latent_channels"]
        self.conv_in = CausalConv3d(self.latent, dims[0], 3, place)
        self.mid_block = MidBlock(dims[0], place)
        self.up_blocks = nn.ModuleList([
            Level(in_dim, out_dim, count, place, up=True, sampler_dim=sampler, time=time)
            for in_dim, out_dim, sampler, time in _plans(cfg)[1]])
        self.norm_out = RMSNorm(dims[-1], place)
        self.conv_out = CausalConv3d(dims[-1], cfg["out_channels"], 3, place)
        self._index: dict[int, Tensor] = {}

    def forward(self, z: Tensor) -> Tensor:
        frames, dim = z.shape[0], self.conv_in.conv.bias.shape[0]
        if frames not in self._index:  # repeat_interleave(dim / latent) of each frame
            rows = np.arange(frames * dim) // (dim // self.latent)
            self._index[frames] = asarray(rows.astype(np.int32), device=z.device)
        x = self.mid_block(self.conv_in(z, add=repeat_channels(z, self._index[frames])))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(self.norm_out(x, silu=True))


class _Flat(FlatGammas):
    """diffusers' tensors with the norms' gammas (C, 1, 1, 1) as (C,) and the attention's
    1x1x1 kernels (C, C, 1, 1, 1) as (C, C) linears."""

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        return np.asarray(value).reshape(self.shape(key)) if _linear(key) else value

    def shape(self, key: str) -> tuple[int, ...]:
        shape = super().shape(key)
        return shape[:2] if _linear(key) else shape


def _linear(key: str) -> bool:
    return ".attentions." in key and key.endswith(".weight")


Pair = tuple[int, int]


def _covered(length: int, size: int, stride: int, keep: int, piece: Callable[[int], int]) -> int:
    """What diffusers' tiles join to along one axis: each tile's `piece` of the output (from
    its input length) cut to `keep`, for tiles every `stride`."""
    return sum(min(piece(min(size, length - i)), keep) for i in range(0, length, stride))


class AutoencoderKLHunyuanVideo15(VideoCalls, nn.Module):
    """Videos (B, 3, T, H, W) in [-1, 1] <-> latents (B, 32, 1 + (T - 1) // 4, H / 16,
    W / 16) (the ratios are the config's). Config: `vae/config.json` of a HunyuanVideo 1.5
    folder; parameter names are diffusers' (`decoder.up_blocks.0.upsamplers.0.conv.conv.
    weight` (out, in, 3, 3, 3), `decoder.mid_block.attentions.0.to_q.weight` (C, C, 1, 1, 1),
    `encoder.norm_out.gamma` (C, 1, 1, 1), ...). diffusers: `AutoencoderKLHunyuanVideo15.
    decode(z).sample`, `.encode(x).latent_dist` (`.mode()`, `.sample()`), `enable_tiling`."""

    name = "HunyuanVideo 1.5 VAE"

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        self.config = _checked(config)
        place: Place = {"dtype": dtype, "device": device}
        self.encoder = Encoder(self.config, place)
        self.decoder = Decoder(self.config, place)
        self.spatial_compression_ratio = self.config["spatial_compression_ratio"]
        self.temporal_compression_ratio = self.config["temporal_compression_ratio"]
        self.use_tiling = False
        self.tile_sample_min_height = self.tile_sample_min_width = 256
        self.tile_latent_min_height = self.tile_latent_min_width = (
            256 // self.spatial_compression_ratio)
        self.tile_overlap_factor = 0.25

    @property
    def scaling_factor(self) -> float:
        """What the transformer's latents are the VAE's times (the pipeline divides by it)."""
        return float(self.config["scaling_factor"])

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True,
                        dtype: Any = None, to_host: bool = False) -> None:
        """Load diffusers' AutoencoderKLHunyuanVideo15 tensors (5D attention kernels, 4D
        gammas; each 3D conv kernel as its temporal taps)."""
        super().load_state_dict(TapState(_Flat(state)), strict=strict, dtype=dtype,
                                to_host=to_host)

    def enable_tiling(self, tile_sample_min_height: int | None = None,
                      tile_sample_min_width: int | None = None,
                      tile_latent_min_height: int | None = None,
                      tile_latent_min_width: int | None = None,
                      tile_overlap_factor: float | None = None) -> None:
        """Spatial tiling on, with the sizes given (None keeps one): tiles of the latent
        size when decoding, of the sample size when encoding, overlapping by the factor.
        diffusers: `enable_tiling` (the same arguments)."""
        self.use_tiling = True
        self.tile_sample_min_height = tile_sample_min_height or self.tile_sample_min_height
        self.tile_sample_min_width = tile_sample_min_width or self.tile_sample_min_width
        self.tile_latent_min_height = tile_latent_min_height or self.tile_latent_min_height
        self.tile_latent_min_width = tile_latent_min_width or self.tile_latent_min_width
        self.tile_overlap_factor = tile_overlap_factor or self.tile_overlap_factor
        if min(int(self.tile_latent_min_height * (1 - self.tile_overlap_factor)),
               int(self.tile_sample_min_height * (1 - self.tile_overlap_factor)),
               int(self.tile_latent_min_width * (1 - self.tile_overlap_factor)),
               int(self.tile_sample_min_width * (1 - self.tile_overlap_factor))) < 1:
            self.use_tiling = False
            raise ValueError("HunyuanVideo 1.5 VAE tiles too small for their overlap: give "
                             "larger tile sizes or a smaller tile_overlap_factor")

    def disable_tiling(self) -> None:
        """Spatial tiling off. diffusers: `disable_tiling`."""
        self.use_tiling = False

    def _tiled(self, x: Tensor, run: Callable[[Tensor], Tensor], size: Pair, out: Pair,
               piece: Callable[[int], int]) -> Tensor:
        """x's frames (T, C, H, W) through `run` in tiles of `size` overlapping by the factor,
        their results (`out` a tile) blended over out x factor and joined as diffusers'
        `tiled_decode` / `tiled_encode`."""
        factor = self.tile_overlap_factor
        stride = (int(size[0] * (1 - factor)), int(size[1] * (1 - factor)))
        extent = (int(out[0] * factor), int(out[1] * factor))
        keep = (out[0] - extent[0], out[1] - extent[1])
        total = tuple(_covered(x.shape[2 + a], size[a], stride[a], keep[a], piece)
                      for a in range(2))
        return spatial_tiles(x, run, size, stride, extent, keep, (total[0], total[1]))

    def decode_frames(self, z: Tensor) -> Tensor:
        """Latent frames (T, C, h, w) -> frames (1 + 4 (T - 1), 3, 16h, 16w), in spatial
        tiles where tiling is on and z is larger than a tile (diffusers' `_decode`)."""
        latent = (self.tile_latent_min_height, self.tile_latent_min_width)
        if not self.use_tiling or (z.shape[2] <= latent[0] and z.shape[3] <= latent[1]):
            return self.decoder(z)
        r = self.spatial_compression_ratio
        return self._tiled(z, self.decoder, latent,
                           (self.tile_sample_min_height, self.tile_sample_min_width),
                           lambda length: length * r)

    def encode_frames(self, x: Tensor) -> Tensor:
        """Frames (T, 3, H, W) -> moments (1 + (T - 1) // 4, 2 C, H / 16, W / 16) (mean, then
        log variance), in spatial tiles as diffusers' `_encode`."""
        sample = (self.tile_sample_min_height, self.tile_sample_min_width)
        if not self.use_tiling or (x.shape[2] <= sample[0] and x.shape[3] <= sample[1]):
            return self.encoder(x)
        r = self.spatial_compression_ratio
        return self._tiled(x, self.encoder, sample,
                           (self.tile_latent_min_height, self.tile_latent_min_width),
                           lambda length: length // r)

    def moments(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, T, H, W) in [-1, 1] -> the posterior's mean and log variance (unclamped),
        each (B, C, 1 + (T - 1) // 4, H / 16, W / 16). diffusers: `encode(x).latent_dist`'s
        `.mean` and `.logvar` (its clamped to [-30, 20])."""
        self._check(video, self.config["in_channels"], "input")
        r, t = self.spatial_compression_ratio, self.temporal_compression_ratio
        _, _, frames, height, width = video.shape
        if height % r or width % r or (frames - 1) % t:
            raise ValueError(f"HunyuanVideo 1.5 VAE input of {frames} frames of {height}x"
                             f"{width}: give 1 + {t}k frames with sides multiples of {r}")
        return self._moments(video)

    def encode(self, video: Tensor, *, noise: Any = None) -> Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> latents (B, C, 1 + (T - 1) // 4, H / 16, W / 16): the
        posterior's mean, or with `noise` (of the latents' shape) the sample mean + std noise.
        diffusers: `encode(x).latent_dist.mode()`, `.sample()` (noise from its generator)."""
        if noise is not None:  # checked before the encoder runs
            noise = asarray(noise, dtype=video.dtype, device=video.device)
            batch, _, frames, height, width = video.shape
            r, t = self.spatial_compression_ratio, self.temporal_compression_ratio
            shape = (batch, self.config["latent_channels"], 1 + (frames - 1) // t,
                     height // r, width // r)
            if noise.shape != shape:
                raise ValueError(f"HunyuanVideo 1.5 VAE noise must have the latents' shape "
                                 f"{shape}, got {noise.shape}")
        mean, logvar = self.moments(video)
        if noise is None:
            return mean
        return mean + exp(clip(logvar, -30.0, 20.0) * 0.5) * noise
