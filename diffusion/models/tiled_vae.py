"""Tiled VAE decode and encode: images larger than one pass of the VAE fits in the device.

    images = vae_decode(vae, latents)         # tiled only when the untiled pass would not fit
    mean, logvar = vae_encode(vae, pixels)

A tile differs from the same region of the untiled pass in three ways; each has its remedy:

1. Attention. The mid block's attention mixes the whole latent, which no tile can imitate; it
   is also where a tile's error was largest (mean 0.11 against 0.018 on the test model). The mid
   block runs at the latent's resolution, where even a 4K image's tensors are small, so it runs
   untiled (decode: before the tiles; encode: on the tiles' blended features) whenever it fits.
2. GroupNorm. A tile normalised by its own statistics shifts in colour and contrast. As the
   WebUI's "Tiled VAE" extension (multidiffusion-upscaler) does, every tile runs up to each
   GroupNorm, the tiles' sums are pooled, and all of them are normalised by the image's
   statistics (`_tiled_vae_passes`). The sums cover each tile's *core* only (the cores
   partition the image), so they add up to the untiled statistics.
3. Context. Convolutions near a tile's edge see zero padding instead of the neighbour. Tiles
   overlap, and in the overlap their outputs are blended with linear ramps (as diffusers'
   `AutoencoderKL.tiled_decode`), so the difference fades across the overlap, not at a line.

Between GroupNorms the tiles' activations wait on the device (together about the size of the
untiled pass's: the binding size, not the memory, is what tiling works around on a large GPU),
or with `offload=True` on the host, so that the device holds one tile's tensors at a time.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray
from gpustd.nn import padding_mode_in_effect

from . import AutoencoderKL
from ._tiled_vae_passes import (
    Pass,
    Tile,
    decode_pass,
    down_pass,
    encode_pass,
    encoder_tail,
    run_together,
    up_pass,
)

__all__ = ["budget_tile", "bytes_per_input_pixel", "decode_tiled", "encode_tiled",
           "needs_tiling", "tile_size", "untiled_bytes", "vae_decode", "vae_encode"]

Mode = Literal["decode", "encode"]
# live tensors of an untiled pass at its widest level, in units of the widest: the upsampled
# input, a resnet's half-width conv outputs and its shortcut (about 3; SDXL's f32 decode at
# 1024: ~3 GiB, which a 4 GiB budget still holds untiled, so the picture stays; FLUX.1's f16
# decode at 1024 on an H100: 1.25 GiB measured against the 1.5 this gives)
_LIVE = 3


# -- sizes ------------------------------------------------------------------------------------
def bytes_per_input_pixel(config: dict[str, Any], mode: Mode, itemsize: int) -> int:
    """Bytes of the VAE's largest activation per input pixel (latent pixel when decoding, image
    pixel when encoding). Decoder level i runs at 4^i times the latent's pixels with its own
    channels and its predecessor's (the upsampler's output); encoder level i at 4^-i."""
    channels = list(config["block_out_channels"])
    if mode == "decode":
        channels = channels[::-1]
    widest = [max(channels[max(i - 1, 0)], channels[i]) for i in range(len(channels))]
    scale = [4.0 ** i if mode == "decode" else 4.0 ** -i for i in range(len(channels))]
    return math.ceil(max(c * s for c, s in zip(widest, scale)) * itemsize)


def untiled_bytes(vae: AutoencoderKL, shape: tuple[int, ...], mode: Mode = "decode") -> int:
    """About the device memory an untiled `mode` pass over a (B, C, H, W) input of `shape`
    takes for its activations (the VAE's weights not counted)."""
    pixels = math.prod(shape[:1] + shape[2:])
    return _LIVE * pixels * bytes_per_input_pixel(vae.config, mode, _itemsize(vae))


def budget_tile(vae: AutoencoderKL, shape: tuple[int, ...], budget: int) -> int:
    """The side of the square decode tile (latent pixels, at least 8) whose untiled pass takes
    half of `budget` bytes (untiled_bytes), for a (B, C, h, w) latent of `shape`."""
    pixels = shape[-1] * shape[-2]
    return max(8, math.isqrt(pixels * budget // 2 // untiled_bytes(vae, shape)))


def _budget(device: Device) -> int:
    """The largest tensor one pass may make: one storage binding (a tensor is one buffer)."""
    limits = device.limits
    return min(limits["max-storage-buffer-binding-size"], limits["max-buffer-size"])


def needs_tiling(vae: AutoencoderKL, shape: tuple[int, ...], device: Device | None = None, *,
                 mode: Mode = "decode") -> bool:
    """Whether an untiled `mode` pass over a (B, C, H, W) input of `shape` makes a tensor larger
    than the device can bind (`max-storage-buffer-binding-size`, `max-buffer-size`)."""
    device = device or vae.decoder.conv_in.weight.device
    batch, _, height, width = shape
    # the encoder pads each level by one pixel before its strided conv
    pixels = (height + 1) * (width + 1) if mode == "encode" else height * width
    per_pixel = bytes_per_input_pixel(vae.config, mode, _itemsize(vae))
    return batch * pixels * per_pixel > _budget(device)


def tile_size(vae: AutoencoderKL, device: Device | None = None, *, mode: Mode = "decode") -> int:
    """The side of the square tile (latent pixels when decoding, image pixels when encoding) whose
    pass makes tensors of at most half the device's binding limit, a multiple of the VAE's
    downsampling factor when encoding."""
    device = device or vae.decoder.conv_in.weight.device
    per_pixel = bytes_per_input_pixel(vae.config, mode, _itemsize(vae))
    side = math.isqrt(_budget(device) // 2 // per_pixel)
    align = _factor(vae) if mode == "encode" else 1
    return max(align * 2, side // align * align)


def _itemsize(vae: AutoencoderKL) -> int:
    return int(vae.decoder.conv_in.weight.dtype.itemsize)


def _factor(vae: AutoencoderKL) -> int:
    return 2 ** (len(vae.config["block_out_channels"]) - 1)


# -- tiles ------------------------------------------------------------------------------------
def _spans(size: int, tile: int, overlap: int, align: int) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis: (start, stop, core start, core stop). Tiles are `tile` long and
    overlap by at least `overlap` (the last one ends flush with the image); the cores split
    each overlap in the middle, on multiples of `align`, and partition [0, size)."""
    if size <= tile:
        return [(0, size, 0, size)]
    starts = [*range(0, size - tile, tile - overlap), size - tile]
    stops = [start + tile for start in starts]
    cuts = [align * round((starts[i + 1] + stops[i]) / 2 / align) for i in range(len(starts) - 1)]
    bounds = [0, *cuts, size]
    return [(a, b, bounds[i], bounds[i + 1]) for i, (a, b) in enumerate(zip(starts, stops))]


def _scaled(spans: list[tuple[int, int, int, int]], up: int,
            down: int) -> list[tuple[int, int, int, int]]:
    """`spans` in output pixels: `up / down` of them per input pixel."""
    return [(a * up // down, b * up // down, c * up // down, d * up // down)
            for a, b, c, d in spans]


def _ramp(spans: list[tuple[int, int, int, int]], index: int) -> np.ndarray:
    """Blend weights over tile `index`: 1, falling linearly towards 0 across its overlaps with
    its neighbours, so that two neighbours' weights sum to 1 there."""
    start, stop = spans[index][:2]
    weight = np.ones(stop - start)
    if index > 0 and (n := spans[index - 1][1] - start) > 0:
        weight[:n] = np.minimum(weight[:n], (np.arange(n) + 0.5) / n)
    if index < len(spans) - 1 and (n := stop - spans[index + 1][0]) > 0:
        weight[-n:] = np.minimum(weight[-n:], (n - np.arange(n) - 0.5) / n)
    return weight


def _tiled(vae: AutoencoderKL, x: np.ndarray, run: Callable[..., Pass], *, tile: int,
           overlap: int, align: int, up: int, down: int, out_channels: int,
           offload: bool) -> np.ndarray:
    """`run` over overlapping tiles of x (B, C, H, W), outputs blended; the output has
    `up / down` pixels per input pixel."""
    batch, _, height, width = x.shape
    rows, cols = (_spans(size, tile, overlap, align) for size in (height, width))
    if len(rows) * len(cols) > 1 and padding_mode_in_effect() == "circular":
        # each tile's convs would wrap around the tile, not the picture: seams inside it
        raise ValueError("tiling (a seamless picture) needs the VAE's pass over the whole "
                         f"picture, and {width * up // down}x{height * up // down} goes in "
                         "tiles here (too large for one pass, or under --max-vram): make it "
                         "smaller or give --max-vram more")
    weight = vae.decoder.conv_in.weight
    passes = []
    for top, bottom, core_top, core_bottom in rows:
        for left, right, core_left, core_right in cols:
            core = (core_top - top, core_bottom - top, core_left - left, core_right - left)
            state = Tile((bottom - top, right - left), core, device=weight.device,
                         dtype=weight.dtype, offload=offload)
            passes.append(run(vae, x[:, :, top:bottom, left:right], state))
    outputs = iter(run_together(passes))
    out_rows, out_cols = _scaled(rows, up, down), _scaled(cols, up, down)
    total = np.zeros((batch, out_channels, height * up // down, width * up // down))
    weights = np.zeros(total.shape[2:])
    for i, (top, bottom, *_) in enumerate(out_rows):
        for j, (left, right, *_) in enumerate(out_cols):
            ramp = np.outer(_ramp(out_rows, i), _ramp(out_cols, j))
            total[:, :, top:bottom, left:right] += next(outputs) * ramp
            weights[top:bottom, left:right] += ramp
    return (total / weights).astype(np.float32)


def _host(x: np.ndarray | Tensor, name: str) -> np.ndarray:
    array = x.numpy() if isinstance(x, Tensor) else np.asarray(x)
    if array.ndim != 4:
        raise ValueError(f"{name} must be (B, C, H, W), got shape {array.shape}")
    return array


def _overlap(tile: int, overlap: int | None, align: int) -> int:
    """The overlap to use, in whole steps of `align` (input pixels per latent pixel) and less
    than the tile. By default a quarter of the tile (diffusers' 0.25), but up to half of it to
    reach 16 latent pixels: a core then ends 8 latent pixels from its tile's edge, about as far
    as the Tiled VAE extension's decoder padding (11)."""
    overlap = max(tile // 4, min(tile // 2, 16 * align)) if overlap is None else overlap
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    return min(-(-overlap // align) * align, tile - align)


def _mid_fits(vae: AutoencoderKL, batch: int, height: int, width: int) -> bool:
    """Whether the mid block's tensors for a (height, width) latent fit one binding."""
    config = vae.config
    channels = max(int(config["block_out_channels"][-1]), 2 * int(config["latent_channels"]))
    weight = vae.decoder.conv_in.weight
    return batch * channels * height * width * _itemsize(vae) <= _budget(weight.device)


def _whole(vae: AutoencoderKL, x: np.ndarray, step: Callable[[Tensor], Tensor]) -> np.ndarray:
    weight = vae.decoder.conv_in.weight
    return step(asarray(x, dtype=weight.dtype, device=weight.device)).numpy()


def decode_tiled(vae: AutoencoderKL, latents: np.ndarray | Tensor, *, tile: int | None = None,
                 overlap: int | None = None, untiled_mid: bool | None = None,
                 offload: bool = False) -> np.ndarray:
    """`vae.decode(latents)` in overlapping tiles of `tile` x `tile` latent pixels (default:
    `tile_size(vae)`, from the device's limits) that overlap by `overlap` latent pixels (default:
    a quarter of the tile, or up to half to reach 16), with the whole image's GroupNorm
    statistics and linear blending in the overlaps.

    untiled_mid: run conv_in and the mid block (whose attention sees the whole latent) on the
    whole latent and tile only the up blocks; None: whenever its tensors fit the device. It is
    what keeps tiles consistent: the attention is the one layer a tile cannot imitate.
    offload: keep the tiles' activations on the host between GroupNorms, so the device holds
    one tile at a time (for GPUs short of memory; much slower: each GroupNorm crosses the bus).
    latents: unscaled (B, C, h, w), as `vae.decode` takes them. Returns float32 (B, 3, 8h, 8w)
    images on the host. diffusers: `vae.enable_tiling(); vae.decode(latents)`.
    """
    z = _host(latents, "latents")
    tile = tile_size(vae, mode="decode") if tile is None else tile
    if tile < 1:
        raise ValueError(f"tile must be >= 1 latent pixel, got {tile}")
    run: Callable[..., Pass] = decode_pass
    if untiled_mid or (untiled_mid is None and _mid_fits(vae, z.shape[0], *z.shape[2:])):
        decoder = vae.decoder
        z = _whole(vae, z, lambda x: decoder.mid_block(decoder.conv_in(vae.post_quant_conv(x))))
        run = up_pass
    return _tiled(vae, z, run, tile=tile, overlap=_overlap(tile, overlap, 1), align=1,
                  up=_factor(vae), down=1, out_channels=int(vae.config["out_channels"]),
                  offload=offload)


def encode_tiled(vae: AutoencoderKL, images: np.ndarray | Tensor, *, tile: int | None = None,
                 overlap: int | None = None, untiled_mid: bool | None = None,
                 offload: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`vae.encode(images)` in overlapping tiles of `tile` x `tile` image pixels (default:
    `tile_size(vae, mode="encode")`) overlapping by `overlap` image pixels (default: a quarter of
    the tile, or up to half to reach 16 latent pixels), both rounded to the VAE's downsampling
    factor (8 for SD), with the image's GroupNorm statistics and linear blending in the overlaps.

    untiled_mid: blend the tiles' features before the mid block and run the mid block and the
    rest on the whole latent grid; None: whenever its tensors fit the device. offload: as for
    `decode_tiled`.
    images: (B, 3, H, W) in [-1, 1], H and W multiples of the factor. Returns float32 (mean,
    logvar), each (B, C, H/8, W/8), on the host. diffusers: `vae.enable_tiling(); vae.encode(x)`.
    """
    x = _host(images, "images")
    factor = _factor(vae)
    if x.shape[2] % factor or x.shape[3] % factor:
        raise ValueError(f"tiled encoding needs image sides that are multiples of {factor}, "
                         f"got {x.shape[3]}x{x.shape[2]}; resize or crop the image")
    tile = tile_size(vae, mode="encode") if tile is None else tile
    tile = max(factor, tile // factor * factor)
    tiles: dict[str, Any] = dict(tile=tile, overlap=_overlap(tile, overlap, factor),
                                 align=factor, up=1, down=factor, offload=offload)
    latent = int(vae.config["latent_channels"])
    height, width = x.shape[2] // factor, x.shape[3] // factor
    if untiled_mid or (untiled_mid is None and _mid_fits(vae, x.shape[0], height, width)):
        encoder = vae.encoder
        features = _tiled(vae, x, down_pass, **tiles,
                          out_channels=int(vae.config["block_out_channels"][-1]))
        moments = _whole(vae, features, lambda f: encoder_tail(
            vae, encoder.conv_norm_out(encoder.mid_block(f), silu=True)))
    else:
        moments = _tiled(vae, x, encode_pass, **tiles, out_channels=2 * latent)
    return moments[:, :latent].astype(np.float32), moments[:, latent:].astype(np.float32)


def vae_decode(vae: AutoencoderKL, latents: np.ndarray | Tensor, *,
               offload: bool = False, frugal: bool = False) -> np.ndarray:
    """`vae.decode(latents)` as float32 host images, tiled (`decode_tiled`, with `offload`) only
    when the untiled pass would make a tensor larger than the device can bind (`needs_tiling`).

    frugal: the untiled pass is frugal with the pool (gpucore MemoryLimit.frugal): each
    resolution's activations take other size classes than the last's, whose idle buffers go
    rather than sit beside them. The memory modes ask for it. It costs time: the next decode
    makes its buffers anew (SD 1.5 at 512 px, H100: 108 buffers and 90 ms of a 0.75 s
    picture, for 0.6 GiB less reserved: 2.25 against 2.84 GiB). Tiles repeat their sizes,
    which the pool serves as it is."""
    z = _host(latents, "latents")
    if needs_tiling(vae, z.shape, mode="decode"):
        return decode_tiled(vae, z, offload=offload)
    weight = vae.decoder.conv_in.weight
    with weight.device.memory_limit.frugal() if frugal else contextlib.nullcontext():
        return vae.decode(asarray(z, dtype=weight.dtype, device=weight.device)).numpy().astype(
            np.float32)


def vae_encode(vae: AutoencoderKL, images: np.ndarray | Tensor, *,
               offload: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`vae.encode(images)` as float32 host (mean, logvar), tiled (`encode_tiled`, with
    `offload`) only when the untiled pass would make a tensor larger than the device can bind
    (`needs_tiling`)."""
    x = _host(images, "images")
    if needs_tiling(vae, x.shape, mode="encode"):
        return encode_tiled(vae, x, offload=offload)
    weight = vae.encoder.conv_in.weight
    mean, logvar = vae.encode(asarray(x, dtype=weight.dtype, device=weight.device))
    return mean.numpy().astype(np.float32), logvar.numpy().astype(np.float32)
