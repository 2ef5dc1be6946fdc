"""The Wan video VAE's blocks (diffusers' names), shared by Wan 2.1's and Wan 2.2's networks:
the causal 3D convolution that keeps a chunk's last frames for the next, the residual block,
the 2D/3D resamplers, the mid block and Wan 2.1's up block: Qwen-Image's (qwen_image_vae)
over causal 3D convolutions, its resamplers with a `time_conv`. Videos are frame-major,
(T, C, H, W): every 2D op sees the frames as its batch."""

from __future__ import annotations

import typing

from gpustd import Tensor, concatenate, nn, take_slice, zeros

from . import qwen_image_vae as qwen
from .layers import Place

__all__ = ["CausalConv3d", "MidBlock", "Resample", "ResidualBlock", "UpBlock", "causal_conv"]

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
            # Tap k reads frames k .. k + count - 1 where they lie (conv2d's `images`).
            src, images = frames, ((k, count) if kt > 1 else None)
            if stride != 1:
                src, images = concatenate([take_slice(frames, k + stride * j,
                                                      k + stride * j + 1, axis=0)
                                           for j in range(count)], axis=0), None
            out = nn.conv2d(src, self._tap(k), self.bias if k == 0 else None,
                            padding=(kh // 2, kw // 2), add=out, images=images)
        return typing.cast(Tensor, out)


def causal_conv(in_dim: int, out_dim: int, kernel: int, place: Place) -> CausalConv3d:
    """A causal 3D convolution of kernel side `kernel` in time and space."""
    return CausalConv3d(in_dim, out_dim, (kernel, kernel, kernel), place)


class ResidualBlock(qwen.ResidualBlock):
    """Qwen-Image's residual block over causal 3D convolutions (a 1x1x1 shortcut keeps no
    frames). diffusers: `WanResidualBlock`."""

    make_conv = staticmethod(causal_conv)


class Resample(qwen.Resample):
    """Qwen-Image's `resample.1`, a 2D up- or down-sampling of every frame, and for the 3D
    modes a `time_conv`: upsampling doubles the frames from the second chunk on (each frame's
    channels split in two frames), downsampling halves them from the second chunk on (a
    stride-2 causal convolution reading the previous chunk's last frame). Upsampling halves
    the channels (Wan 2.1) or makes `out_dim` (Wan 2.2). diffusers: `WanResample`."""

    def __init__(self, dim: int, mode: str, place: Place, *, out_dim: int | None = None) -> None:
        super().__init__(dim, mode, place, out_dim=out_dim)
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
            return super().forward(x)
        x = super().forward(x)
        if time_conv is not None:
            if self._started:
                x = time_conv(x, stride=2, keep=1)
            else:
                time_conv.remember(x, 1)
            self._started = True
        return x


class MidBlock(qwen.MidBlock):
    """Qwen-Image's mid block over Wan's residual blocks."""

    residual_kind = ResidualBlock


class UpBlock(qwen.UpBlock):
    """Wan 2.1's up block."""

    residual_kind = ResidualBlock
    resample_kind = Resample
