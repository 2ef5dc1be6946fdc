"""diffusers' tiling of AutoencoderKLHunyuanVideo, on frames (T, C, H, W): a clip longer
than a tile runs as overlapping tiles of frames (on by default, as diffusers'
`use_framewise_decoding` / `_encoding`), a picture larger than a tile as overlapping tiles of
pixels (after `enable_tiling`), each tile's overlap with the one before (above, to the left)
blended linearly into it. The results equal diffusers' tiled ones: the same tiles, blended in
the same order, each blend reading the tile before as the blends before left it.
"""

from __future__ import annotations

import typing
from collections.abc import Callable

import numpy as np

from gpustd import Tensor, asarray, concatenate, elementwise_kernel, take_slice
from gpustd.shape import put_slice

__all__ = ["Tiling", "blend", "spatial_tiles"]

_TIME, _HEIGHT, _WIDTH = 0, 2, 3  # the axes of frames (T, C, H, W)
Pair = tuple[int, int]  # (height, width)


@elementwise_kernel
def _mix(before, after, weight):
    return before * (1.0 - weight) + after * weight


def blend(before: Tensor, after: Tensor, extent: int, axis: int) -> Tensor:
    """`after` with its first e = min(extent, both lengths) entries along `axis` mixed from
    `before`'s last e, the weight of `after`'s i / e; in place. diffusers: `blend_v`,
    `blend_h`, `blend_t` of AutoencoderKLHunyuanVideo."""
    extent = min(before.shape[axis], after.shape[axis], extent)
    if extent <= 0:
        return after
    shape = [1] * after.ndim
    shape[axis] = extent
    weight = asarray((np.arange(extent) / extent).reshape(shape), dtype=after.dtype,
                     device=after.device)
    length = before.shape[axis]
    mixed = typing.cast(Tensor, _mix(take_slice(before, length - extent, length, axis=axis),
                                     take_slice(after, 0, extent, axis=axis), weight))
    put_slice(after, mixed, 0, axis=axis)
    return after


def _crop(x: Tensor, height: int, width: int) -> Tensor:
    """x[:, :, :height, :width] (no copy where nothing is cut)."""
    if x.shape[_HEIGHT] > height:
        x = take_slice(x, 0, height, axis=_HEIGHT)
    if x.shape[_WIDTH] > width:
        x = take_slice(x, 0, width, axis=_WIDTH)
    return x


def _place(out: Tensor | None, piece: Tensor, start: int, axis: int,
           shape: tuple[int, ...]) -> Tensor:
    """`piece` written into `out` (made of `shape` at the first piece) from `start` along
    `axis`, cut to what fits: the result is built in place, never joined in a second copy."""
    if out is None:
        out = Tensor.empty(shape, piece.dtype, device=piece.device)
    fits = min(piece.shape[axis], out.shape[axis] - start)
    if fits > 0:
        put_slice(out, take_slice(piece, 0, fits, axis=axis) if fits < piece.shape[axis]
                  else piece, start, axis=axis)
    return out


def spatial_tiles(x: Tensor, run: Callable[[Tensor], Tensor], size: Pair, stride: Pair,
                  extent: Pair, keep: Pair, out_size: Pair) -> Tensor:
    """Tiles of x (T, C, H, W), `size` (height, width) every `stride`, each through `run`,
    blended over `extent` with the tile above and the one to the left, cut to `keep` and
    joined; cut to `out_size`. diffusers: `tiled_decode` / `tiled_encode`."""
    height, width = x.shape[_HEIGHT], x.shape[_WIDTH]
    above: list[Tensor] = []
    out, start = None, 0
    for i in range(0, height, stride[0]):
        band = take_slice(x, i, min(i + size[0], height), axis=_HEIGHT)
        row: list[Tensor] = []
        for j in range(0, width, stride[1]):
            tile = run(take_slice(band, j, min(j + size[1], width), axis=_WIDTH))
            if above:
                tile = blend(above[len(row)], tile, extent[0], _HEIGHT)
            if row:
                tile = blend(row[-1], tile, extent[1], _WIDTH)
            row.append(tile)
        joined = _crop(concatenate([_crop(t, *keep) for t in row], axis=_WIDTH), *out_size)
        out = _place(out, joined, start, _HEIGHT, (*joined.shape[:2], *out_size))
        start += joined.shape[_HEIGHT]
        above = row
    assert out is not None  # x has at least one tile
    return out


def _temporal(x: Tensor, run: Callable[[Tensor], Tensor], length: int, stride: int,
              extent: int, keep: int, count: int, least: int, *,
              drop_last: bool = False) -> Tensor:
    """Tiles of `length` + 1 frames of x every `stride`, each through `run` (all but the
    first dropping their first result frame, or their last with `drop_last`: LTX-2's
    decode), blended over `extent` frames with the one before, cut to `keep` frames (the
    first to keep + 1), joined and cut to `count`; a last tile shorter than `least` frames
    (one result frame) is not run.
    diffusers: `_temporal_tiled_decode` / `_temporal_tiled_encode`."""
    frames = x.shape[_TIME]
    before: Tensor | None = None
    out, start = None, 0
    for i in range(0, frames, stride):
        if before is not None and frames - i < least:
            break  # its result is only the frame dropped: diffusers' adds nothing
        tile = run(take_slice(x, i, min(i + length + 1, frames), axis=_TIME))
        if before is not None:
            made = tile.shape[_TIME]
            kept = (take_slice(tile, 0, made - 1, axis=_TIME) if drop_last
                    else take_slice(tile, 1, made, axis=_TIME))
            tile = blend(before, kept, extent, _TIME)
        piece = take_slice(tile, 0, min(keep + (before is None), tile.shape[_TIME]),
                           axis=_TIME)
        out = _place(out, piece, start, _TIME, (count, *tile.shape[1:]))
        start += piece.shape[_TIME]
        before = tile
    assert out is not None  # x has at least one tile
    return out


class Tiling:
    """diffusers' tile sizes and switches, and the tiled decode and encode of one clip's
    frames over a model's `decode_tile` / `encode_tile` (its networks in one go)."""

    spatial_compression_ratio: int
    temporal_compression_ratio: int
    decode_drops_last = False  # a frame tile after the first drops its last frame (LTX-2)
    decode_tile: Callable[[Tensor], Tensor]
    encode_tile: Callable[[Tensor], Tensor]

    def __init__(self) -> None:
        self.use_tiling = False
        self.use_framewise_decoding = self.use_framewise_encoding = True
        self.tile_sample_min_height = self.tile_sample_min_width = 256
        self.tile_sample_min_num_frames = 16
        self.tile_sample_stride_height = self.tile_sample_stride_width = 192
        self.tile_sample_stride_num_frames = 12

    def enable_tiling(self, *, tile_sample_min_height: int | None = None,
                      tile_sample_min_width: int | None = None,
                      tile_sample_min_num_frames: int | None = None,
                      tile_sample_stride_height: int | None = None,
                      tile_sample_stride_width: int | None = None,
                      tile_sample_stride_num_frames: int | None = None) -> None:
        """Spatial tiling on, with the sizes given (in pixels and frames; None keeps one).
        diffusers: `enable_tiling` (the same arguments)."""
        self.use_tiling = True
        self.tile_sample_min_height = tile_sample_min_height or self.tile_sample_min_height
        self.tile_sample_min_width = tile_sample_min_width or self.tile_sample_min_width
        self.tile_sample_min_num_frames = (tile_sample_min_num_frames
                                           or self.tile_sample_min_num_frames)
        self.tile_sample_stride_height = (tile_sample_stride_height
                                          or self.tile_sample_stride_height)
        self.tile_sample_stride_width = tile_sample_stride_width or self.tile_sample_stride_width
        self.tile_sample_stride_num_frames = (tile_sample_stride_num_frames
                                              or self.tile_sample_stride_num_frames)

    def disable_tiling(self) -> None:
        """Spatial tiling off (frames still tile). diffusers: `disable_tiling`."""
        self.use_tiling = False

    def _sizes(self) -> tuple[Pair, Pair]:
        """The spatial tiles' (height, width) and their strides, in pixels."""
        return ((self.tile_sample_min_height, self.tile_sample_min_width),
                (self.tile_sample_stride_height, self.tile_sample_stride_width))

    def _decode_space(self, z: Tensor) -> Tensor:
        r = self.spatial_compression_ratio
        (size_h, size_w), (stride_h, stride_w) = self._sizes()
        height, width = z.shape[_HEIGHT], z.shape[_WIDTH]
        if not self.use_tiling or (height <= size_h // r and width <= size_w // r):
            return self.decode_tile(z)
        return spatial_tiles(z, self.decode_tile, (size_h // r, size_w // r),
                             (stride_h // r, stride_w // r),
                             (size_h - stride_h, size_w - stride_w), (stride_h, stride_w),
                             (height * r, width * r))

    def _encode_space(self, x: Tensor) -> Tensor:
        r = self.spatial_compression_ratio
        (size_h, size_w), (stride_h, stride_w) = self._sizes()
        height, width = x.shape[_HEIGHT], x.shape[_WIDTH]
        if not self.use_tiling or (height <= size_h and width <= size_w):
            return self.encode_tile(x)
        return spatial_tiles(x, self.encode_tile, (size_h, size_w), (stride_h, stride_w),
                             (size_h // r - stride_h // r, size_w // r - stride_w // r),
                             (stride_h // r, stride_w // r), (height // r, width // r))

    def decode_frames(self, z: Tensor) -> Tensor:
        """Latent frames (T, C, h, w) -> frames (1 + 4 (T - 1), 3, 8h, 8w), tiled as
        diffusers' `_decode`."""
        t = self.temporal_compression_ratio
        size, stride = self.tile_sample_min_num_frames, self.tile_sample_stride_num_frames
        if not self.use_framewise_decoding or z.shape[_TIME] <= size // t:
            return self._decode_space(z)
        return _temporal(z, self._decode_space, size // t, stride // t, size - stride, stride,
                         (z.shape[_TIME] - 1) * t + 1, 2, drop_last=self.decode_drops_last)

    def encode_frames(self, x: Tensor) -> Tensor:
        """Frames (T, 3, H, W) -> moments (1 + (T - 1) // 4, 2 C, H / 8, W / 8), tiled as
        diffusers' `_encode`."""
        t = self.temporal_compression_ratio
        size, stride = self.tile_sample_min_num_frames, self.tile_sample_stride_num_frames
        if not self.use_framewise_encoding or x.shape[_TIME] <= size:
            return self._encode_space(x)
        return _temporal(x, self._encode_space, size, stride, size // t - stride // t,
                         stride // t, (x.shape[_TIME] - 1) // t + 1, t + 1)
