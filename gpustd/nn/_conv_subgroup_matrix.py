"""f16 conv2d on the matrix units: an implicit GEMM built by gpustd/gemm/matrix_codegen.py.

out[c_out, pixel] = weight[c_out, K] @ patches[K, pixel], K = c_in * kh * kw, pixels over
(image, y, x) of the output. The weight is the left operand, read as stored ([c_out, K]
row-major, 8 f16 per load when K allows); the patch matrix never exists: staging gathers
each K-step tile of it from the NCHW input by im2col index (zero outside the image, so any
stride, padding and dilation). Each invocation stages one fixed pixel column, so its image,
row and column are decoded once, not per K step. A prologue (gpustd/nn/prologue.py: GroupNorm,
+ SiLU) maps each gathered value inside the image in f32 before it is staged as f16, so the
normalized input is never written; the zero padding stays zero. The epilogue adds the bias
and the residual `add` (of the output's shape, or one value per image and channel) as
gpustd/nn/conv.py's f32 kernel does, and writes NCHW. One group only: conv.py keeps the
portable kernel otherwise. conv.py also asks the tuner (gpustd/nn/_conv_matrix_tuning.py)
for the tile it passes here.

Split K: a conv of fewer than MIN_TILES output tiles (the SD UNet's 1280-channel convs at
16 x 16 and 8 x 8: 160 and 40 tiles of 64 x 64 for 132 multiprocessors, K = 11520-23040)
splits K over the grid's z (`split_count`): each split writes f32 partial sums to a scratch
buffer [splits, output] and shaders/nn/conv2d_splitk.wgsl (the portable kernel's finish)
sums them in split order, adds bias and `add` and casts to f16: the same result bit for bit
on every run with the same split count. The splits are the conv's, not the tile's
(`split_count` counts them for the rule's tile, whichever tile runs; each covers whole steps of
_SPLIT_GRANULE): the tuner's candidate tiles then add the same partial sums in the same order
(gpucore.autotune's contract; a 128 x 128 candidate split K 9 ways where the 64 x 64 default
split it 7 ways before, and gave other bits).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from gpucore import Kernel

from .._tensor import Tensor
from ..gemm import matrix_codegen as sm
from ..gemm.matrix_tile import on_device
from ..gemm.matrix_units import available
from ..gemm.plan import MULTIPROCESSORS, WAVE
from ._conv_matrix_source import bindings, source
from ._util import dummy, kernel
from .prologue import ConvPrologue

__all__ = ["ALIGNED", "CONV_TILES", "CONV_TILES_ACC16", "MIN_TILES", "NARROW", "NARROW_ONLY",
           "NARROW_TILES", "SPLIT_K", "aligned", "applies", "bindings", "choose_conv_tile",
           "conv2d_matrix", "routed", "source", "split_count", "tile_count", "tile_splits"]

# The gather needs threads % BN == 0 (fixed pixel columns), which every tile here satisfies.
# 128 x 128 loads, stages and multiplies each K step in turn (no prefetch): 6-12% faster on
# SDXL's 640- and 1280-channel convs (H100, Dawn, 2026-11-25, bench/NOTES.md "Producer
# subgroups, 4 x 4 fragments, conv tiles"): 2x640x64x64 -> 640 0.625 against 0.699 ms,
# 1920 -> 640 1.961 / 2.169, 2x1280x32x32 -> 1280 0.644 / 0.727.
CONV_TILES = {"128x128": sm.MatrixTile(4, 2, 2, 4, prefetch=False),
              "64x64": sm.MatrixTile(2, 2, 2, 2), "32x32": sm.MatrixTile(1, 1, 2, 2),
              "160x128": sm.MatrixTile(5, 2, 2, 4, prefetch=False),
              "320x64": sm.MatrixTile(5, 2, 4, 2, prefetch=False),
              # 16 subgroups (512 invocations): the VAEs' 128-, 256- and 512-channel convs
              "256x128": sm.MatrixTile(4, 2, 4, 4, prefetch=False),
              "128x256": sm.MatrixTile(4, 2, 2, 8, prefetch=False),
              # the upscalers' narrow convs (RRDBNet: 32 and 64 channels at 512² to 2048²)
              "16x128": sm.MatrixTile(1, 2, 1, 4), "32x128": sm.MatrixTile(2, 2, 1, 4),
              "32x128np": sm.MatrixTile(2, 2, 1, 4, prefetch=False),
              "32x256": sm.MatrixTile(2, 2, 1, 8), "64x128": sm.MatrixTile(2, 4, 2, 2),
              "64x128np": sm.MatrixTile(2, 4, 2, 2, prefetch=False),
              "64x256": sm.MatrixTile(2, 4, 2, 4)}
# With f16 accumulators (matrix_units.accumulation "f16"): every tile above with them, and
# tiles of 4 x 4 or 5 x 4 fragments a subgroup that f32 accumulators cannot hold (128 or 160
# registers an invocation for them alone).
CONV_TILES_ACC16 = {**{name: replace(tile, acc="f16") for name, tile in CONV_TILES.items()},
                    "256x256": sm.MatrixTile(4, 4, 4, 4, acc="f16", prefetch=False),
                    "256x256p": sm.MatrixTile(4, 4, 4, 4, acc="f16"),
                    "256x128/4x4": sm.MatrixTile(4, 4, 4, 2, acc="f16", prefetch=False),
                    "128x256/4x4": sm.MatrixTile(4, 4, 2, 4, acc="f16", prefetch=False),
                    "320x128": sm.MatrixTile(5, 4, 4, 2, acc="f16", prefetch=False),
                    "320x128p": sm.MatrixTile(5, 4, 4, 2, acc="f16"),
                    "160x256": sm.MatrixTile(5, 4, 2, 4, acc="f16", prefetch=False)}
# The tiles above made for C_out of at most this many channels (no other conv's candidates).
NARROW = 64
NARROW_ONLY = ("16x128", "32x128", "32x128np", "32x256", "64x128", "64x128np", "64x256")
# The narrow tiles' rule (`_narrow`): C_out -> the tile of 3x3-or-larger convs with exactly
# that many output channels, K of NARROW_MIN_K or more (RRDBNet's 64 input channels and up,
# not a ControlNet hint block's 16 and 32) and NARROW_PIXELS output pixels or more (the UNets'
# and VAEs' convs have none of these channel counts). RRDBNet x4 at 512² (H100, Dawn,
# bench/NOTES.md "The upscaler's narrow convs"): 249.9 -> 234.9 ms with these two tiles, 225.2
# with NARROW_SMALL too (32 x 32 and 64 x 64 before; 32 x 256 and 64 x 256: 289.8); the gain
# is 2048²'s 64-channel convs leaving the portable kernel, 32 x 128 itself is within 2% of
# 32 x 32.
NARROW_TILES = {32: "32x128", 64: "64x128"}
NARROW_MIN_K = 576
NARROW_PIXELS = 256 * 256
# The tile of convs of at most 16 output channels whose 64-pixel tiles would overflow the
# grid's x (2048² and up: the portable kernel ran them, 11.6 ms for RRDBNet's last conv).
NARROW_SMALL: str | None = "16x128"
# Fewer 64 x 64 output tiles than this (two waves) and the portable kernel, which
# splits K, is as fast or faster (H100: 2x1280x16x16 -> 1280, 160 tiles: 0.66 ms either way;
# 2x1280x8x8 -> 1280: 0.21 ms portable, 0.48 ms here at best).
MIN_TILES = 2 * MULTIPROCESSORS
# Below MIN_TILES, split K (split_count) rather than leave the conv to the portable kernel.
SPLIT_K = True
# The bounds-free kernel where C_out, pixels and K fill the tile (`aligned`).
ALIGNED = True
# Splits: up to ~8 64 x 64 workgroups per multiprocessor (128 invocations, 14 KiB of
# workgroup memory each: many fit), at most _MAX_SPLITS, each at least _MIN_SPLIT_STEPS K
# steps of 32 long. H100 (Dawn, tools/sm_sweep --conv, 2026-11-24), GPU ms in 2 / 4 / 8 / 14
# splits against the portable kernel: 2x1280x16x16 -> 1280 0.506 / 0.511 / 0.511 / 0.485
# (0.659); 2x1280x8x8 0.373 / 0.223 / 0.152 / 0.186 (0.206); 2x2560x16x16 0.950 / 0.936 /
# 0.932 / 0.861 (1.268). Short splits lose (8 x 8 at 14: 26 steps each).
_MAX_SPLITS = 16
_MIN_SPLIT_STEPS = 40
# Splits start on multiples of this many K (a multiple of every CONV_TILES BK), so that the
# same split count cuts K at the same places in every tile.
_SPLIT_GRANULE = 32


def tile_count(c_out: int, pixels: int, tile: sm.MatrixTile) -> int:
    """Output tiles (workgroups) of `tile` over c_out channels x pixels."""
    return math.ceil(c_out / tile.bm) * math.ceil(pixels / tile.bn)


def split_count(c_out: int, pixels: int, k_total: int) -> int:
    """K splits of this conv, whichever tile runs it, with f32 or f16 accumulators: those
    `tile_splits` gives the (f32) rule's tile (choose_conv_tile). SD 1.5 UNet: 1280 -> 1280
    channels at 16 x 16 (128 x 128 tiles, K 11520) 9 splits, at 8 x 8 (64 x 64 tiles) 9."""
    return tile_splits(c_out, pixels, k_total, choose_conv_tile(c_out, pixels, k_total))


def tile_splits(c_out: int, pixels: int, k_total: int, tile: sm.MatrixTile) -> int:
    """K splits that suit `tile` over this conv: 1 from MIN_TILES output tiles up, else
    enough splits for ~8 workgroups per multiprocessor, each at least _MIN_SPLIT_STEPS K
    steps. 64 x 64 tiles (BK 32): 1280 -> 1280 channels at 16 x 16 (160 tiles, K 11520) 7.
    Tiles the rule takes only from a wave on are unsplit: the 16-subgroup ones, and 128 x 128
    where C_out is no multiple of 160 (choose_conv_tile). The tall tiles (_tall: 160 or 320
    rows) are unsplit where C_out is no multiple of 128, else take 128 x 128's splits
    (_tall_for_big)."""
    big = CONV_TILES["128x128"]
    if tile in (CONV_TILES["256x128"], CONV_TILES["128x256"]):
        return 1
    if tile in (CONV_TILES["160x128"], CONV_TILES["320x64"]):
        if c_out % big.bm:
            return 1
        tile = big
    count = tile_count(c_out, pixels, tile)
    if count >= MIN_TILES or not SPLIT_K or (tile == big and c_out % 160 and count >= WAVE):
        return 1
    wanted = math.ceil(8 * MULTIPROCESSORS / count)
    k_steps = math.ceil(k_total / tile.bk)
    return max(1, min(_MAX_SPLITS, wanted, k_steps // _MIN_SPLIT_STEPS))


def routed(c_out: int, pixels: int, k_total: int, split: bool = True) -> bool:
    """Whether a conv of this size suits the kernel (host logic, no device): at least
    MIN_TILES 64 x 64 output tiles, or (`split` and SPLIT_K) a K deep enough to split."""
    small = CONV_TILES["64x64"]
    return (tile_count(c_out, pixels, small) >= MIN_TILES
            or (split and tile_splits(c_out, pixels, k_total, small) > 1))


def applies(x: Tensor, weight: Tensor, groups: int, out_hw: tuple[int, int],
            split: bool = True, count: int | None = None) -> bool:
    """Whether conv2d (arguments validated) runs here, over `count` images (None: all of x's):
    f16, one group, a device with f16 -> f32 subgroup matrices, an output within the grid and
    `routed` (split=False: MIN_TILES tiles at least; other plain 1x1 convs go to the GEMM)."""
    c_out, c_in, kh, kw = weight.shape
    pixels = (x.shape[0] if count is None else count) * out_hw[0] * out_hw[1]
    max_x = x.device.limits["max-compute-workgroups-per-dimension"]
    return (x.dtype == np.float16 and groups == 1 and x.size > 0 and weight.size > 0
            and routed(c_out, pixels, c_in * kh * kw, split)
            and pixels <= max_x * _widest(c_out, pixels, c_in * kh * kw)
            and available(x.device))


def _widest(c_out: int, pixels: int, k_total: int) -> int:
    """The pixels a tile covers that runs this conv: the narrow rule's tile where it applies,
    else 64 x 64's (the grid's x counts pixel tiles)."""
    narrow = _narrow(c_out, pixels, k_total)
    return CONV_TILES[narrow or "64x64"].bn


def _narrow(c_out: int, pixels: int, k_total: int) -> str | None:
    """The narrow tiles' rule (NARROW_TILES, NARROW_SMALL): the tile's name, or None."""
    if pixels < NARROW_PIXELS:
        return None
    if c_out in NARROW_TILES and k_total >= NARROW_MIN_K:
        return NARROW_TILES[c_out]
    if c_out <= 16 and math.ceil(pixels / CONV_TILES["64x64"].bn) > 65535:
        return NARROW_SMALL
    return None


def choose_conv_tile(c_out: int, pixels: int, k_total: int = 0, *, storage: int = 48 * 1024,
                     invocations: int = 1024, accumulate: str = "f32") -> sm.MatrixTile:
    """The rule's tile for a conv of c_out output channels over `pixels` output pixels with
    K = k_total, among the tiles a workgroup of `storage` bytes and `invocations` holds (the
    320-row and 16-subgroup tiles need more than Vulkan's minimum; the others fit it). In
    order:

    - the narrow tiles of the upscalers' 32- and 64-channel convs, and of the large pictures'
      convs of at most 16 channels (`_narrow`);
    - 32 x 32 under 64 output channels where 64 x 64 tiles need no split;
    - the tall tile (_tall: 320 x 64 where C_out is a multiple of 320, else 160 x 128) where
      C_out is a multiple of 160 and not of 128 (the UNets' 320), K is 64 or more (not a
      first conv) and they make a wave;
    - 64 x 64 where C_out is no multiple of 128, or K is under 64;
    - where C_out is no multiple of 160 (the VAEs' 128, 256, 512): from a wave of them, the
      16-subgroup tiles (256 x 128 where C_out is a multiple of 256, else 128 x 256), else
      128 x 128 from a wave, unsplit;
    - 128 x 128 (K split where they make few tiles; the tall tile in its place where C_out is
      also a multiple of 160: _tall_for_big) where they make two waves, or for deep convs
      (C_out >= 640, K >= 8640, 512 pixels or more);
    - else 64 x 64.

    Each step's measurements (H100 and H200 through Dawn: the tiles it took over from, and
    those that lost) are in bench/NOTES.md: "choose_conv_tile's measurements", "160-wide
    GEMM tiles", "160 x 128 conv tiles for 640 and 1280 channels", "16-subgroup tiles".
    accumulate "f16": a tile of CONV_TILES_ACC16 (`_acc16`)."""
    if accumulate == "f16":
        return _acc16(c_out, pixels, k_total, storage, invocations)
    def fits(tile: sm.MatrixTile) -> bool:
        return _shared_bytes(tile) <= storage and tile.threads <= invocations

    big = CONV_TILES["128x128"]
    tall = _tall(c_out, fits)
    narrow = _narrow(c_out, pixels, k_total)
    if narrow is not None and fits(CONV_TILES[narrow]):
        return CONV_TILES[narrow]
    if c_out < 64 and tile_count(c_out, pixels, CONV_TILES["64x64"]) >= MIN_TILES:
        return CONV_TILES["32x32"]
    if (c_out % big.bm and c_out % tall.bm == 0 and not 0 < k_total < 64
            and math.ceil(pixels / tall.bn) <= 65535 and tile_count(c_out, pixels, tall) >= WAVE):
        return tall
    if math.ceil(pixels / big.bn) > 65535 or c_out % big.bm or 0 < k_total < 64:
        return CONV_TILES["64x64"]
    if c_out % 160:
        wide = CONV_TILES["256x128" if c_out % 256 == 0 else "128x256"]
        if (fits(wide) and math.ceil(pixels / wide.bn) <= 65535
                and tile_count(c_out, pixels, wide) >= WAVE):
            return wide
        if tile_count(c_out, pixels, big) >= WAVE:
            return big
    if (tile_count(c_out, pixels, big) >= 2 * MULTIPROCESSORS
            or (c_out >= 640 and k_total >= 8640 and pixels >= 512)):
        return tall if _tall_for_big(c_out, pixels, tall) else big
    return CONV_TILES["64x64"]


def _acc16(c_out: int, pixels: int, k_total: int, storage: int,
           invocations: int) -> sm.MatrixTile:
    """choose_conv_tile's tile with f16 accumulators, in the f32 rule's K splits
    (split_count), in order:

    - 320 x 128 (8 subgroups of 5 x 4 fragments) where the f32 rule takes 320 x 64 unsplit
      and 320 x 128 tiles make a wave (SDXL's 320 channels at 128 x 128, 640 at 64 x 64);
    - 256 x 128 (16 subgroups of 4 x 2) for multiples of 1280 output channels where the f32
      rule takes 128 x 128 or 320 x 64 (the UNets' 1280 at 32 x 32 and 16 x 16, split K;
      the VAEs' 256 and 512 keep the f32 rule's choice, not measured with f16);
    - 320 x 64 where it takes 64 x 64 unsplit for multiples of 320 channels, K 64 or more
      (SD 1.5's 640 at 32 x 32);
    - else the f32 rule's tile with f16 accumulators.

    H100, Dawn, GPU ms, f32 rule's tile / its f16 twin / this rule's (bench/NOTES.md, "f16
    accumulators in the matrix-unit conv"): SDXL 2x320x128x128 -> 320 0.469 / 0.462 / 0.376,
    2x1920x64x64 -> 640 1.359 / 1.302 / 0.978, 2x1280x32x32 -> 1280 0.549 / 0.528 / 0.483;
    SD 1.5 2x1280x16x16 -> 1280 0.216 / 0.218 / 0.186, 2x640x32x32 -> 640 0.248 / 0.242 /
    0.193. 320 x 128 over 64 tiles loses (SD 1.5's 2x320x64x64: 0.165 against 0.113)."""
    def fits(tile: sm.MatrixTile) -> bool:
        return (_shared_bytes(tile) <= storage and tile.threads <= invocations
                and math.ceil(pixels / tile.bn) <= 65535)

    base = choose_conv_tile(c_out, pixels, k_total, storage=storage, invocations=invocations)
    unsplit = tile_splits(c_out, pixels, k_total, base) == 1
    wide, sixteen = CONV_TILES_ACC16["320x128"], CONV_TILES_ACC16["256x128"]
    tall = CONV_TILES_ACC16["320x64"]
    if (base == CONV_TILES["320x64"] and unsplit and fits(wide)
            and tile_count(c_out, pixels, wide) >= WAVE):
        return wide
    if (base in (CONV_TILES["128x128"], CONV_TILES["320x64"]) and c_out % 1280 == 0
            and fits(sixteen)):
        return sixteen
    if (base == CONV_TILES["64x64"] and unsplit and c_out % tall.bm == 0 and k_total >= 64
            and fits(tall)):
        return tall
    return replace(base, acc="f16")


@functools.lru_cache(maxsize=64)
def _shared_bytes(tile: sm.MatrixTile) -> int:
    return tile.shared_bytes()  # asked three times a conv call (the rule, its split count)


def _tall(c_out: int, fits: Callable[[sm.MatrixTile], bool]) -> sm.MatrixTile:
    """The tile of 160-row multiples for C_out: 320 x 64 (8 subgroups of 5 x 2 fragments, one
    gathered patch value serving 320 output channels) where C_out is a multiple of 320 and
    the device `fits` it, else 160 x 128."""
    wide = CONV_TILES["320x64"]
    return wide if c_out % wide.bm == 0 and fits(wide) else CONV_TILES["160x128"]


def _tall_for_big(c_out: int, pixels: int, tall: sm.MatrixTile) -> bool:
    """Whether the `tall` tile takes the place of the rule's 128 x 128 (with its K splits:
    split_count): C_out a multiple of 160 too (640, 1280) and 128 x 128 tiles that fill at
    least a wave."""
    return (c_out % tall.bm == 0 and math.ceil(pixels / tall.bn) <= 65535
            and tile_count(c_out, pixels, CONV_TILES["128x128"]) >= WAVE)


def aligned(tile: sm.MatrixTile, c_out: int, pixels: int, k_total: int) -> bool:
    """Whether the bounds-free kernel serves this conv: C_out, pixels and K whole multiples
    of the tile's BM, BN and BK (every SD UNet 3x3 conv but conv_in/conv_out), ALIGNED on."""
    return (ALIGNED and c_out % tile.bm == 0 and pixels % tile.bn == 0
            and k_total % tile.bk == 0)


def _kernel(tile: sm.MatrixTile, kh: int, kw: int, width_w: int, split: bool,
            bounds_free: bool, prologue: int, upsample: bool) -> Kernel:
    return Kernel.generated("nn/conv2d_subgroup_matrix", source, tile, kh, kw, width_w, split,
                            bounds_free, prologue, upsample)


def conv2d_matrix(x: Tensor, weight: Tensor, bias: Tensor | None, *, stride: tuple[int, int],
                  padding: tuple[int, int], dilation: tuple[int, int], out_hw: tuple[int, int],
                  add: Tensor | None = None, add_mode: int = 0,
                  tile: sm.MatrixTile, splits: int | None = None,
                  prologue: ConvPrologue | None = None, upsample: int = 1,
                  leaky: tuple[float, float] | None = None,
                  images: tuple[int, int] | None = None) -> Tensor:
    """gpustd.nn.conv2d for f16 and one group (see `applies`), its arguments validated by
    conv2d: x [N, C_in, H, W], weight [C_out, C_in, kh, kw], bias [C_out] or None, add as
    conv2d's (`add_mode` 1: the output's shape, 2: [N, C_out, 1, 1]); x may have more
    channels than the weight reads (conv2d's in_channels; no prologue then). Accumulation
    in `tile` (conv2d asks the tuner; tests force one) and in its `acc` type, K in `splits`
    parts (default split_count's, the same for every tile and both types; fewer where
    K has fewer steps of _SPLIT_GRANULE) cut at the same K whatever the tile. prologue:
    applied to x as it is gathered (conv2d's, checked there); upsample: 2 reads x upsampled
    2x (nearest), as conv2d's; images ((start, count), read in place): conv2d's. leaky:
    (slope, scale): the epilogue stores scale * max(v, slope * v) of v = the sum + bias,
    then adds `add` (one split only: ValueError otherwise)."""
    n, c_in, h, w = x.shape  # c_in: x's channels, of which the conv reads weight's first
    start, n = images or (0, n)
    x_offset, h, w = start * c_in * h * w, h * upsample, w * upsample
    c_out, c_read, kh, kw = weight.shape
    ho, wo = out_hw
    out = Tensor.empty((n, c_out, ho, wo), np.float16, device=x.device)
    tile = on_device(tile, x.device)
    pixels = n * ho * wo
    k_total = c_read * kh * kw
    width_w = sm.load_width(tile, k_total, ())
    if splits is None:
        splits = split_count(c_out, pixels, k_total)
    if not isinstance(splits, int) or splits < 1:
        raise ValueError(f"conv2d_matrix: splits must be a positive int, got {splits!r}")
    if _SPLIT_GRANULE % tile.bk:
        raise ValueError(f"conv2d_matrix: tile {tile.name}'s K step does not divide "
                         f"{_SPLIT_GRANULE}, where K splits start")
    if splits > 1 and splits * out.size * 4 > x.device.limits["max-storage-buffer-binding-size"]:
        splits = 1  # the partial sums would not fit one binding (as gemm.plan.k_partition)
    granules = math.ceil(k_total / _SPLIT_GRANULE)
    per_split = math.ceil(granules / min(splits, granules))
    splits = math.ceil(granules / per_split)  # every split walks at least one step
    per_split *= _SPLIT_GRANULE // tile.bk  # in the tile's K steps
    bias_t = bias if bias is not None else dummy(x)
    add_t = add if add is not None else dummy(x)
    geometry = dict(c_in=c_in, h=h, w=w, c_out=c_out, ho=ho, wo=wo, k_total=k_total,
                    pixels=pixels, stride_h=stride[0], stride_w=stride[1], pad_h=padding[0],
                    pad_w=padding[1], dil_h=dilation[0], dil_w=dilation[1],
                    split_steps=per_split, x_offset=x_offset, leaky=int(leaky is not None),
                    slope=leaky[0] if leaky else 1.0, scale=leaky[1] if leaky else 1.0)
    if leaky is not None and splits > 1:
        raise ValueError("conv2d_matrix: the LeakyReLU epilogue needs one K split, got "
                         f"{splits}; apply it after the conv")
    grid = (math.ceil(pixels / tile.bn), math.ceil(c_out / tile.bm), splits)
    free = aligned(tile, c_out, pixels, k_total)
    kind = 0 if prologue is None else prologue.kind
    norm = () if prologue is None else (prologue.table,)
    if splits == 1:
        _kernel(tile, kh, kw, width_w, False, free, kind, upsample == 2).dispatch(
            grid, x, weight, bias_t, add_t, out, *norm, **geometry,
            has_bias=int(bias is not None), add_mode=add_mode)
        return out
    # 1. each split's f32 partial sums, without bias or add
    partial = Tensor.empty((splits, out.size), np.float32, device=x.device)
    _kernel(tile, kh, kw, width_w, True, free, kind, upsample == 2).dispatch(
        grid, x, weight, bias_t, add_t, partial, *norm, **geometry, has_bias=0, add_mode=0)
    # 2. their sum in split order, bias, add, f16: the portable split-K conv's finish
    finish = kernel("conv2d_splitk", {"T": x.dtype}, HAS_BIAS=int(bias is not None),
                    ADD=add_mode)
    finish.dispatch(finish.groups_for(out.size), partial, bias_t, add_t, out, n=out.size,
                    hw=ho * wo, c_out=c_out, splits=splits)
    return out
