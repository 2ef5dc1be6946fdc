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

The norms and the mid-block attention are Qwen-Image's (its VAE is this one on one frame).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, permute, take_slice

from .layers import Place
from .qwen_image_vae import _DEFAULTS, RMSNorm, _clamp_unit
from .wan_vae_blocks import CausalConv3d, MidBlock, Resample, ResidualBlock, UpBlock
from .wan_vae_replay import decode_frames
from .wan_vae_residual import ResidualDownBlock, ResidualUpBlock, patchify, unpatchify

__all__ = ["AutoencoderKLWan"]


class Encoder(nn.Module):
    """diffusers: `WanEncoder3d` (no attention scales)."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim, mult = cfg["base_dim"], list(cfg["dim_mult"])
        dims = [dim * u for u in [1, *mult]]
        self.conv_in = CausalConv3d(cfg["in_channels"], dims[0], (3, 3, 3), place)
        blocks: list[nn.Module] = []
        last = len(mult) - 1
        for i in range(len(mult)):
            in_dim, out_dim = dims[i], dims[i + 1]
            if cfg["is_residual"]:
                blocks.append(ResidualDownBlock(
                    in_dim, out_dim, cfg["num_res_blocks"], place=place, down=i != last,
                    temporal=i != last and bool(cfg["temperal_downsample"][i])))
                continue
            for _ in range(cfg["num_res_blocks"]):
                blocks.append(ResidualBlock(in_dim, out_dim, place))
                in_dim = out_dim
            if i != len(mult) - 1:
                mode = "downsample3d" if cfg["temperal_downsample"][i] else "downsample2d"
                blocks.append(Resample(out_dim, mode, place))
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(dims[-1], place)
        self.norm_out = RMSNorm(dims[-1], place)
        self.conv_out = CausalConv3d(dims[-1], 2 * cfg["z_dim"], (3, 3, 3), place)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(self.norm_out(self.mid_block(x), silu=True))


class Decoder(nn.Module):
    """diffusers: `WanDecoder3d`."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim, mult = cfg.get("decoder_base_dim") or cfg["base_dim"], list(cfg["dim_mult"])
        dims = [dim * u for u in [mult[-1], *mult[::-1]]]
        upsample = list(cfg["temperal_downsample"])[::-1]
        self.conv_in = CausalConv3d(cfg["z_dim"], dims[0], (3, 3, 3), place)
        self.mid_block = MidBlock(dims[0], place)
        blocks: list[nn.Module] = []
        self.residual = bool(cfg["is_residual"])
        for i in range(len(mult)):
            up = i != len(mult) - 1
            if self.residual:
                blocks.append(ResidualUpBlock(dims[i], dims[i + 1], cfg["num_res_blocks"],
                                              temporal=up and bool(upsample[i]), up=up,
                                              place=place))
                continue
            mode = ("upsample3d" if upsample[i] else "upsample2d") if up else None
            blocks.append(UpBlock(dims[i] // 2 if i > 0 else dims[i], dims[i + 1],
                                  cfg["num_res_blocks"], mode, place))
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = RMSNorm(dims[-1], place)
        self.conv_out = CausalConv3d(dims[-1], cfg["out_channels"], (3, 3, 3), place)

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


class _FlatGammas(Mapping[str, Any]):
    """A diffusers state dict (or a loader's lazy mapping) with the norms' (C, 1, 1[, 1])
    gammas seen as (C,)."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        self._state = state

    def __iter__(self) -> Iterator[str]:
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)

    def __getitem__(self, key: str) -> Any:
        value = self._state[key]
        return np.asarray(value).reshape(-1) if key.endswith(".gamma") else value

    def shape(self, key: str) -> tuple[int, ...]:
        shape_of = getattr(self._state, "shape", None)
        shape = tuple(shape_of(key)) if callable(shape_of) else np.shape(self._state[key])
        return (shape[0],) if key.endswith(".gamma") else shape


def _frames(video: Tensor, index: int) -> Tensor:
    """(B, C, T, H, W) -> video `index` as (T, C, H, W)."""
    _, channels, count, height, width = video.shape
    one = take_slice(video, index, index + 1, axis=0).reshape(channels, count, height, width)
    return permute(one, (1, 0, 2, 3))


def _video(frames: list[Tensor]) -> Tensor:
    """[(T, C, H, W) per video] -> (B, C, T, H, W)."""
    out = [permute(f, (1, 0, 2, 3)).reshape(1, f.shape[1], f.shape[0], *f.shape[2:])
           for f in frames]
    return out[0] if len(out) == 1 else concatenate(out, axis=0)


class AutoencoderKLWan(nn.Module):
    """Videos (B, 3, T, H, W) in [-1, 1], T = 1 + 4k <-> latents (B, z_dim, 1 + k, H / s,
    W / s), s = `spatial_factor` (8; 16 for Wan 2.2's).

    Config: `vae/config.json` of a Wan 2.1 folder, or of Wan 2.2 TI2V 5B's (`is_residual`,
    `patch_size` 2, z_dim 48). Parameter names are diffusers'
    (`decoder.up_blocks.0.resnets.0.conv1.weight` of shape (out, in, 3, 3, 3),
    `decoder.up_blocks.0.upsamplers.0.time_conv.weight`, ...). diffusers:
    `AutoencoderKLWan.decode(z).sample` and `.encode(x).latent_dist` (`.mean`, `.logvar`).
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, "in_channels": 3, "out_channels": 3, "is_residual": False,
               "patch_size": None, **config}
        if cfg["patch_size"] not in (None, 1, 2) or bool(cfg["patch_size"] == 2) != bool(
                cfg["is_residual"]):
            raise ValueError(f"Wan VAE patch_size {cfg['patch_size']!r} with is_residual "
                             f"{cfg['is_residual']!r} is neither Wan 2.1's (none, False) nor "
                             "Wan 2.2's (2, True); fix the VAE's config.json")
        if cfg["attn_scales"]:
            raise ValueError("this Wan VAE has attention in its down/up blocks (attn_scales), "
                             "which is not supported; use Wan 2.1's VAE")
        if len(cfg["latents_mean"]) != cfg["z_dim"] or len(cfg["latents_std"]) != cfg["z_dim"]:
            raise ValueError(f"latents_mean and latents_std must have z_dim = {cfg['z_dim']} "
                             "values each; fix the VAE's config.json")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        z_dim = cfg["z_dim"]
        self.encoder = Encoder(cfg, place)
        self.quant_conv = CausalConv3d(2 * z_dim, 2 * z_dim, (1, 1, 1), place)
        self.post_quant_conv = CausalConv3d(z_dim, z_dim, (1, 1, 1), place)
        self.decoder = Decoder(cfg, place)

    @property
    def device(self) -> Device:
        return self.post_quant_conv.weight.device

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
        super().load_state_dict(_FlatGammas(state), strict=strict, dtype=dtype,
                                to_host=to_host)

    def _statistics(self, dtype: Any) -> tuple[Tensor, Tensor]:
        shape = (1, -1, 1, 1, 1)
        mean_ = np.asarray(self.config["latents_mean"], np.float32).reshape(shape)
        std = np.asarray(self.config["latents_std"], np.float32).reshape(shape)
        return (asarray(mean_, dtype=dtype, device=self.device),
                asarray(std, dtype=dtype, device=self.device))

    def normalize(self, latents: Tensor) -> Tensor:
        """(z - latents_mean) / latents_std over (B, z_dim, F, h, w): what the transformer
        reads. WanPipeline: `(z - mean) * (1 / std)`."""
        mean_, std = self._statistics(latents.dtype)
        return (latents - mean_) * (1.0 / std)

    def denormalize(self, latents: Tensor) -> Tensor:
        """latents * latents_std + latents_mean: what `decode` reads.
        WanPipeline: `latents / (1 / std) + mean`."""
        mean_, std = self._statistics(latents.dtype)
        return latents / (1.0 / std) + mean_

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
            frames = self.post_quant_conv(_frames(latents, b))
            _reset(self.decoder)
            out = concatenate(decode_frames(self.decoder, frames, replay=replay), axis=0)
            _reset(self.decoder)
            if self.config["patch_size"] == 2:
                out = unpatchify(out, 2)
            videos.append(_clamp_unit(out))
        return _video(videos)

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
            frames = _frames(pixels, b)
            if self.config["patch_size"] == 2:
                frames = patchify(frames, 2)
            _reset(self.encoder)
            bounds = [(0, 1)] + [(s, s + step) for s in range(1, frames.shape[0], step)]
            out = [self.encoder(take_slice(frames, start, stop, axis=0))
                   for start, stop in bounds]
            _reset(self.encoder)
            videos.append(self.quant_conv(concatenate(out, axis=0)))
        moments = _video(videos)
        z_dim = self.config["z_dim"]
        return (take_slice(moments, 0, z_dim, axis=1),
                take_slice(moments, z_dim, 2 * z_dim, axis=1))
