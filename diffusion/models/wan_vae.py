"""The Wan 2.1 video VAE (diffusers' AutoencoderKLWan names): causal 3D convolutions over
frames, 8x spatial and 4x temporal compression, 16 latent channels normalized per channel by
the config's `latents_mean` / `latents_std`.

A video is held frame-major, (T, C, H, W), so every 2D op (norms, attention, the spatial
resampling convolutions) sees the frames as its batch. A causal convolution (kt, kh, kw) is
the sum over its kt temporal taps of 2D convolutions of the frames shifted in time, with
zeros (or the previous chunk's last frames) in front. Encode and decode run chunk by chunk
as diffusers does (1 then 4 frames in, 1 latent frame out at a time), each causal convolution
keeping the last two frames it read: memory grows with a chunk, not the clip.

The norms and the mid-block attention are Qwen-Image's (its VAE is this one on one frame).
"""

from __future__ import annotations

import typing
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, permute, take_slice, zeros

from .layers import Place
from .qwen_image_vae import _DEFAULTS, AttentionBlock, RMSNorm, _clamp_unit

__all__ = ["AutoencoderKLWan"]

_HISTORY = 2  # frames a causal convolution keeps from one chunk for the next (CACHE_T)


class CausalConv3d(nn.Module):
    """diffusers' `WanCausalConv3d`: weight (out, in, kt, kh, kw), zero padding (kh // 2,
    kw // 2) in space and kt - 1 frames in front in time. Called chunk by chunk, it pads with
    the last frames of the previous chunk instead (`reset` starts a new clip)."""

    def __init__(self, in_dim: int, out_dim: int, kernel: tuple[int, int, int],
                 place: Place) -> None:
        self.weight = nn.parameter((out_dim, in_dim, *kernel), place["dtype"], place["device"])
        self.bias = nn.parameter((out_dim,), place["dtype"], place["device"])
        self._history: Tensor | None = None

    def reset(self) -> None:
        self._history = None

    def remember(self, frames: Tensor, keep: int) -> None:
        """Keep the last `keep` of `frames` as what precedes the next chunk."""
        seen = frames.shape[0]
        self._history = take_slice(frames, max(0, seen - keep), seen, axis=0)

    def _tap(self, k: int) -> Tensor:
        out_dim, in_dim, _, kh, kw = self.weight.shape
        return take_slice(self.weight, k, k + 1, axis=2).reshape(out_dim, in_dim, kh, kw)

    def forward(self, x: Tensor, *, add: Tensor | None = None, stride: int = 1,
                keep: int = _HISTORY) -> Tensor:
        """x: (T, in, H, W) frames -> (T', out, H, W); `stride` in time (the downsampling
        time_conv's 2, which pads nothing); `keep` frames of x (with the history before them)
        remembered for the next chunk."""
        _, _, kt, kh, kw = self.weight.shape
        frames = x
        if kt > 1:
            before = [] if self._history is None else [self._history]
            length = sum(t.shape[0] for t in before)
            missing = kt - 1 - length if stride == 1 else 0
            if missing > 0:
                before.insert(0, zeros((missing, *x.shape[1:]), x.dtype, device=x.device))
            frames = concatenate([*before, x], axis=0) if before else x
        if keep and kt > 1:
            self.remember(frames, keep)
        count = (frames.shape[0] - kt) // stride + 1
        out = add
        for k in range(kt):
            if stride == 1:
                src = take_slice(frames, k, k + count, axis=0) if kt > 1 else frames
            else:
                src = concatenate([take_slice(frames, k + stride * j, k + stride * j + 1, axis=0)
                                   for j in range(count)], axis=0)
            out = nn.conv2d(src, self._tap(k), self.bias if k == 0 else None,
                            padding=(kh // 2, kw // 2), add=out)
        return typing.cast(Tensor, out)


class ResidualBlock(nn.Module):
    """norm1, SiLU, conv1, norm2, SiLU, conv2, plus the (projected) input.
    diffusers: `WanResidualBlock`."""

    def __init__(self, in_dim: int, out_dim: int, place: Place) -> None:
        self.norm1 = RMSNorm(in_dim, place)
        self.conv1 = CausalConv3d(in_dim, out_dim, (3, 3, 3), place)
        self.norm2 = RMSNorm(out_dim, place)
        self.conv2 = CausalConv3d(out_dim, out_dim, (3, 3, 3), place)
        self.conv_shortcut = (CausalConv3d(in_dim, out_dim, (1, 1, 1), place)
                              if in_dim != out_dim else None)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.conv_shortcut(x, keep=0) if self.conv_shortcut is not None else x
        h = self.conv1(self.norm1(x, silu=True))
        return self.conv2(self.norm2(h, silu=True), add=shortcut)


class Resample(nn.Module):
    """`resample.1`, a 2D up- or down-sampling of every frame, and for the 3D modes a
    `time_conv`: upsampling doubles the frames from the second chunk on (each frame's channels
    split in two frames), downsampling halves them from the second chunk on (a stride-2 causal
    convolution reading the previous chunk's last frame). diffusers: `WanResample`."""

    def __init__(self, dim: int, mode: str, place: Place) -> None:
        self.up = mode.startswith("upsample")
        conv = (nn.Conv2d(dim, dim // 2, 3, padding=1, **place) if self.up
                else nn.Conv2d(dim, dim, 3, stride=2, **place))
        self.resample = nn.ModuleList([nn.Identity(), conv])
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), place)
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), place)
        self._started = False

    def reset(self) -> None:
        self._started = False

    def forward(self, x: Tensor) -> Tensor:
        time_conv = getattr(self, "time_conv", None)
        if self.up:
            if time_conv is not None and self._started:
                frames, channels, height, width = x.shape
                x = time_conv(x).reshape(2 * frames, channels, height, width)
            self._started = True
            return self.resample[1](x, upsample=2)
        x = self.resample[1](nn.pad(x, (0, 1, 0, 1)))
        if time_conv is not None:
            if self._started:
                x = time_conv(x, stride=2, keep=1)
            else:
                time_conv.remember(x, 1)
            self._started = True
        return x


class MidBlock(nn.Module):
    def __init__(self, dim: int, place: Place) -> None:
        self.resnets = nn.ModuleList([ResidualBlock(dim, dim, place) for _ in range(2)])
        self.attentions = nn.ModuleList([AttentionBlock(dim, place)])

    def forward(self, x: Tensor) -> Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class UpBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, count: int, upsample: str | None,
                 place: Place) -> None:
        self.resnets = nn.ModuleList([ResidualBlock(in_dim if i == 0 else out_dim, out_dim,
                                                    place) for i in range(count + 1)])
        self.upsamplers = (nn.ModuleList([Resample(out_dim, upsample, place)])
                           if upsample else None)

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return self.upsamplers[0](x) if self.upsamplers is not None else x


class Encoder(nn.Module):
    """diffusers: `WanEncoder3d` (Wan 2.1's: no residual down blocks, no attention scales)."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim, mult = cfg["base_dim"], list(cfg["dim_mult"])
        dims = [dim * u for u in [1, *mult]]
        self.conv_in = CausalConv3d(cfg["in_channels"], dims[0], (3, 3, 3), place)
        blocks: list[nn.Module] = []
        for i in range(len(mult)):
            in_dim, out_dim = dims[i], dims[i + 1]
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
    """diffusers: `WanDecoder3d` (Wan 2.1's)."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim, mult = cfg.get("decoder_base_dim") or cfg["base_dim"], list(cfg["dim_mult"])
        dims = [dim * u for u in [mult[-1], *mult[::-1]]]
        upsample = list(cfg["temperal_downsample"])[::-1]
        self.conv_in = CausalConv3d(cfg["z_dim"], dims[0], (3, 3, 3), place)
        self.mid_block = MidBlock(dims[0], place)
        blocks = []
        for i in range(len(mult)):
            mode = None
            if i != len(mult) - 1:
                mode = "upsample3d" if upsample[i] else "upsample2d"
            blocks.append(UpBlock(dims[i] // 2 if i > 0 else dims[i], dims[i + 1],
                                  cfg["num_res_blocks"], mode, place))
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = RMSNorm(dims[-1], place)
        self.conv_out = CausalConv3d(dims[-1], cfg["out_channels"], (3, 3, 3), place)

    def forward(self, x: Tensor) -> Tensor:
        x = self.mid_block(self.conv_in(x))
        for block in self.up_blocks:
            x = block(x)
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
    """Videos (B, 3, T, H, W) in [-1, 1], T = 1 + 4k <-> latents (B, z_dim, 1 + k, H / 8,
    W / 8).

    Config: `vae/config.json` of a Wan 2.1 folder. Parameter names are diffusers'
    (`decoder.up_blocks.0.resnets.0.conv1.weight` of shape (out, in, 3, 3, 3),
    `decoder.up_blocks.0.upsamplers.0.time_conv.weight`, ...). diffusers:
    `AutoencoderKLWan.decode(z).sample` and `.encode(x).latent_dist` (`.mean`, `.logvar`).
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, "in_channels": 3, "out_channels": 3, **config}
        if cfg.get("is_residual") or cfg.get("patch_size"):
            raise ValueError("this is Wan 2.2's VAE (is_residual / patch_size), which is not "
                             "supported yet; use a Wan 2.1 model's VAE")
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
        return 2 ** (len(self.config["dim_mult"]) - 1)

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True,
                        dtype: Any = None) -> None:
        """Load diffusers' AutoencoderKLWan tensors (5D kernels, 4D/5D gammas)."""
        super().load_state_dict(_FlatGammas(state), strict=strict, dtype=dtype)

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

    def decode(self, latents: Tensor) -> Tensor:
        """(B, z_dim, F, h, w) VAE latents (denormalized) -> (B, 3, 1 + 4 (F - 1), 8h, 8w)
        clamped to [-1, 1], decoded one latent frame at a time."""
        if latents.ndim != 5:
            raise ValueError(f"Wan VAE latents must be (batch, {self.config['z_dim']}, frames, "
                             f"height, width), got shape {latents.shape}")
        videos = []
        for b in range(latents.shape[0]):
            frames = self.post_quant_conv(_frames(latents, b))
            _reset(self.decoder)
            out = [self.decoder(take_slice(frames, i, i + 1, axis=0))
                   for i in range(frames.shape[0])]
            _reset(self.decoder)
            videos.append(typing.cast(Tensor, _clamp_unit(concatenate(out, axis=0))))
        return _video(videos)

    def encode(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, T, H, W) in [-1, 1], T = 1 + 4k, H and W multiples of 8 -> the posterior's
        mean and log variance, each (B, z_dim, 1 + k, H / 8, W / 8) (not normalized), encoded
        1 then 4 frames at a time. diffusers: `encode(x).latent_dist` (`.mean`, `.logvar`,
        the latter unclamped)."""
        step = self.temporal_factor
        if pixels.ndim != 5 or (pixels.shape[2] - 1) % step:
            raise ValueError(f"Wan VAE input must be (batch, 3, frames, height, width) with "
                             f"frames = 1 + {step}k, got shape {pixels.shape}")
        videos = []
        for b in range(pixels.shape[0]):
            frames = _frames(pixels, b)
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
