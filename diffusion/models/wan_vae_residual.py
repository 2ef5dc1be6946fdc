"""Wan 2.2's VAE blocks (diffusers' AutoencoderKLWan with `is_residual` and `patch_size`):
down and up blocks whose shortcut is a parameter-free reshuffle (frames and pixels averaged
into channels going down, channels repeated into frames and pixels going up), and the 2x2
patches the 5B model's VAE reads and writes. Frame-major (T, C, H, W) as wan_vae_blocks."""

from __future__ import annotations

from gpustd import Tensor, concatenate, nn, permute, take_slice, zeros
from gpustd.reduction import mean

from . import qwen_image_vae as qwen
from .layers import Place
from .wan_vae_blocks import Resample, ResidualBlock

__all__ = ["ResidualDownBlock", "ResidualUpBlock", "avg_down", "dup_up", "patchify",
           "unpatchify"]


def patchify(x: Tensor, patch: int) -> Tensor:
    """(T, C, H, W) -> (T, C p p, H / p, W / p), channel c p^2 + (column offset) p + (row
    offset). diffusers: `patchify` of autoencoder_kl_wan."""
    frames, channels, height, width = x.shape
    cut = x.reshape(frames, channels, height // patch, patch, width // patch, patch)
    return permute(cut, (0, 1, 5, 3, 2, 4)).reshape(
        frames, channels * patch * patch, height // patch, width // patch)


def unpatchify(x: Tensor, patch: int) -> Tensor:
    """patchify's inverse. diffusers: `unpatchify`."""
    frames, channels, height, width = x.shape
    cut = x.reshape(frames, channels // (patch * patch), patch, patch, height, width)
    return permute(cut, (0, 1, 4, 3, 5, 2)).reshape(
        frames, channels // (patch * patch), height * patch, width * patch)


def avg_down(x: Tensor, out_dim: int, factor_t: int, factor_s: int) -> Tensor:
    """(T, C, H, W) -> (ceil(T / ft), out_dim, H / fs, W / fs): zero frames in front up to a
    multiple of ft, each ft x fs x fs block's values moved into channels (c, t, row, column),
    then consecutive groups of channels averaged into out_dim. diffusers: `AvgDown3D`."""
    frames, channels, height, width = x.shape
    pad = (factor_t - frames % factor_t) % factor_t
    if pad:
        x = concatenate([zeros((pad, channels, height, width), x.dtype, device=x.device), x])
        frames += pad
    h, w = height // factor_s, width // factor_s
    groups, factor = frames // factor_t, factor_t * factor_s * factor_s
    # (T', ft, C, h, fs, w, fs) -> (T', C, ft, fs, fs, h, w) in two moves (copies reorder at
    # most six strided dimensions): the pixels' offsets first, then the frames'
    cut = x.reshape(groups * factor_t * channels, h, factor_s, w, factor_s)
    pixels = permute(cut, (0, 2, 4, 1, 3)).reshape(groups, factor_t, channels, -1)
    moved = permute(pixels, (0, 2, 1, 3))
    grouped = moved.reshape(groups, out_dim, channels * factor // out_dim, h, w)
    return mean(grouped, axis=2)


def dup_up(x: Tensor, out_dim: int, factor_t: int, factor_s: int, *,
           first_chunk: bool) -> Tensor:
    """(T, C, H, W) -> (T ft, out_dim, H fs, W fs): each channel repeated, the copies spread
    over channels (c, t, row, column); a clip's first chunk drops its first ft - 1 frames.
    diffusers: `DupUp3D`."""
    frames, channels, height, width = x.shape
    repeats = out_dim * factor_t * factor_s * factor_s // channels
    copies = x.reshape(frames, channels, 1, height, width)
    spread = concatenate([copies] * repeats, axis=2) if repeats > 1 else copies
    # (T, out, ft, fs, fs, H, W) -> (T, ft, out, H, fs, W, fs) in two moves, as avg_down
    cut = spread.reshape(frames, out_dim, factor_t, -1)
    moved = permute(cut, (0, 2, 1, 3)).reshape(frames * factor_t * out_dim, factor_s,
                                                factor_s, height, width)
    out = permute(moved, (0, 3, 1, 4, 2)).reshape(
        frames * factor_t, out_dim, height * factor_s, width * factor_s)
    if first_chunk and factor_t > 1:
        out = take_slice(out, factor_t - 1, out.shape[0], axis=0)
    return out


class ResidualDownBlock(nn.Module):
    """Residual blocks, then the down-sampler, plus `avg_down` of the input.
    diffusers: `WanResidualDownBlock`. `residual_kind`, `resample_kind`: Wan's causal 3D
    parts (Qwen-Image 2.1's 2D ones: qwen_image21_vae)."""

    residual_kind: type[qwen.ResidualBlock] = ResidualBlock
    resample_kind: type[qwen.Resample] = Resample

    def __init__(self, in_dim: int, out_dim: int, count: int, *, temporal: bool, down: bool,
                 place: Place) -> None:
        self.out_dim, self.factor_t, self.factor_s = out_dim, 2 if temporal else 1, 2 if down else 1
        self.resnets = nn.ModuleList([self.residual_kind(in_dim if i == 0 else out_dim, out_dim,
                                                         place) for i in range(count)])
        mode = "downsample3d" if temporal else "downsample2d"
        self.downsampler = self.resample_kind(out_dim, mode, place) if down else None

    def forward(self, x: Tensor) -> Tensor:
        shortcut = avg_down(x, self.out_dim, self.factor_t, self.factor_s)
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsampler is not None:
            x = self.downsampler(x)
        return x + shortcut


class ResidualUpBlock(nn.Module):
    """Residual blocks, then the up-sampler (to out_dim channels), plus `dup_up` of the input.
    diffusers: `WanResidualUpBlock`. `residual_kind`, `resample_kind` as ResidualDownBlock's."""

    residual_kind: type[qwen.ResidualBlock] = ResidualBlock
    resample_kind: type[qwen.Resample] = Resample

    def __init__(self, in_dim: int, out_dim: int, count: int, *, temporal: bool, up: bool,
                 place: Place) -> None:
        self.out_dim, self.factor_t, self.up = out_dim, 2 if temporal else 1, up
        self.resnets = nn.ModuleList([self.residual_kind(in_dim if i == 0 else out_dim, out_dim,
                                                         place) for i in range(count + 1)])
        mode = "upsample3d" if temporal else "upsample2d"
        self.upsampler = (self.resample_kind(out_dim, mode, place, out_dim=out_dim) if up
                          else None)

    def forward(self, x: Tensor, *, first_chunk: bool = False) -> Tensor:
        shortcut = (dup_up(x, self.out_dim, self.factor_t, 2, first_chunk=first_chunk)
                    if self.up else None)
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsampler is not None:
            x = self.upsampler(x)
        return x + shortcut if shortcut is not None else x
