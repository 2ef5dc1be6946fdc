"""The f16 implicit-GEMM conv2d on the matrix units (gpustd/nn/_conv_subgroup_matrix.py).
Its kernels compile only on Dawn adapters with subgroup matrices (GPUCORE_RUNTIME=dawn on the
GPU machine); here the generated WGSL is checked against gpucore's reader, and results against
torch's float64 conv2d on the CPU wherever the kernel is available: everywhere, on adapters
with shader-f16 and subgroups, with the matrix units emulated (conftest.matrix_device)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import emulated_subset, emulated_tile, matrix_device

import gpucore
from gpucore import _wgsl
from gpustd import Tensor
from gpustd.gemm import matrix_units as sm
from gpustd.nn import _conv_subgroup_matrix as csm
from gpustd.nn import conv2d


@pytest.fixture
def device(device: gpucore.Device) -> gpucore.Device:
    """Here, the adapter's Device with subgroup matrices, emulated where it has none."""
    return matrix_device(device)


@pytest.mark.parametrize("tile", csm.CONV_TILES.values(), ids=lambda t: t.name)
@pytest.mark.parametrize(("kh", "kw", "width"), [(3, 3, 8), (1, 1, 4), (2, 5, 1)])
def test_generated_kernel_interface(tile: sm.MatrixTile, kh: int, kw: int, width: int) -> None:
    if width == 8 and not tile.wide and (tile.bm * tile.bk) % (8 * tile.threads):
        width = 4  # load_width gives a tile without `wide` 4 at most; 160 x 32 needs that
    source = csm.source(tile, kh, kw, width)
    signature = _wgsl.parse(source)
    assert [b.name for b in signature.storage] == ["x", "weight", "bias", "add", "out"]
    assert all(b.scalar == "f16" for b in signature.storage)
    assert signature.entry_points["main"].workgroup_size == (str(tile.threads),)
    assert source.count("subgroupMatrixMultiplyAccumulate") == tile.fm * tile.fn * tile.bk // 16
    # the patch index decodes (channel, ky, kx) with the kernel size as constants
    assert f"k / {kh * kw}u" in source and f"k % {kw}u" in source


def test_gather_needs_fixed_pixel_columns() -> None:
    with pytest.raises(ValueError, match="pixel columns"):
        csm.source(sm.MatrixTile(1, 4, 1, 1), 3, 3, 8)  # 32 invocations, 64 columns


def test_tile_choice() -> None:
    assert csm.choose_conv_tile(320, 2 * 64 * 64) == csm.CONV_TILES["320x64"]  # 128 tiles
    assert csm.choose_conv_tile(320, 2 * 32 * 32, 2880) == csm.CONV_TILES["64x64"]  # 32 tiles
    assert csm.split_count(320, 2 * 64 * 64, 2880) == 1  # 320 x 64 runs unsplit
    # 640 and 1280 channels: 320 x 64 in the place of 128 x 128 where those fill a wave,
    # with 128 x 128's K splits (the same bits)
    assert csm.choose_conv_tile(640, 4 * 64 * 64) == csm.CONV_TILES["320x64"]
    assert csm.choose_conv_tile(1280, 2 * 32 * 32, 11520) == csm.CONV_TILES["320x64"]
    assert csm.split_count(1280, 2 * 32 * 32, 11520) == csm.tile_splits(
        1280, 2 * 32 * 32, 11520, csm.CONV_TILES["128x128"]) == 7
    assert csm.choose_conv_tile(480, 4 * 64 * 64) == csm.CONV_TILES["160x128"]  # not of 320
    # deep convs at 16x16 and 32x32 take 128 x 128 (split K), not at 8x8 nor with K 5760
    assert csm.choose_conv_tile(1280, 2 * 16 * 16, 11520) == csm.CONV_TILES["128x128"]
    assert csm.choose_conv_tile(640, 2 * 32 * 32, 8640) == csm.CONV_TILES["128x128"]
    assert csm.choose_conv_tile(1280, 2 * 8 * 8, 11520) == csm.CONV_TILES["64x64"]
    assert csm.choose_conv_tile(1280, 2 * 16 * 16, 5760) == csm.CONV_TILES["64x64"]
    # SDXL's 320 channels at 2x128x128: one tile of 320 rows (3 of 128 would cover 384)
    assert csm.choose_conv_tile(320, 2 * 128 * 128, 2880) == csm.CONV_TILES["320x64"]
    assert csm.choose_conv_tile(128, 512 * 512, 27) == csm.CONV_TILES["64x64"]  # one K step
    assert csm.choose_conv_tile(3, 512 * 512, 1152) == csm.CONV_TILES["32x32"]  # VAE conv_out
    assert csm.choose_conv_tile(4, 2 * 64 * 64, 2880) == csm.CONV_TILES["64x64"]  # split K
    # the upscalers' narrow convs (RRDBNet's 32 and 64 channels, 64 inputs and up), and
    # 3 channels at 2048² (64-pixel tiles would overflow the grid)
    assert csm.choose_conv_tile(32, 512 * 512, 576) == csm.CONV_TILES["32x128"]
    assert csm.choose_conv_tile(64, 2048 * 2048, 576) == csm.CONV_TILES["64x128"]
    assert csm.choose_conv_tile(3, 2048 * 2048, 576) == csm.CONV_TILES["16x128"]
    assert csm.choose_conv_tile(32, 512 * 512, 288) == csm.CONV_TILES["32x32"]  # hint block
    assert csm.choose_conv_tile(32, 128 * 128, 576) != csm.CONV_TILES["32x128"]  # few pixels


def test_tile_choice_without_160_rows() -> None:
    # the VAEs' channels: 16 subgroups from a wave of them, else 128 x 128 from a wave, unsplit
    assert csm.choose_conv_tile(512, 128 * 128, 4608) == csm.CONV_TILES["256x128"]
    assert csm.choose_conv_tile(256, 2 * 128 * 128, 2304) == csm.CONV_TILES["256x128"]
    assert csm.choose_conv_tile(768, 4 * 64 * 64) == csm.CONV_TILES["256x128"]
    assert csm.choose_conv_tile(128, 512 * 512, 1152) == csm.CONV_TILES["128x256"]
    assert csm.choose_conv_tile(512, 64 * 64, 4608) == csm.CONV_TILES["128x128"]  # 128 tiles
    assert csm.split_count(512, 64 * 64, 4608) == 1
    assert csm.split_count(512, 128 * 128, 4608) == 1
    # a device of 256 invocations a workgroup keeps 128 x 128
    assert csm.choose_conv_tile(512, 128 * 128, 4608, invocations=256) == csm.CONV_TILES[
        "128x128"]
    assert csm.choose_conv_tile(512, 32 * 32, 4608) == csm.CONV_TILES["64x64"]  # 32 tiles


_real_conv2d_matrix = csm.conv2d_matrix


def _reference(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, add: np.ndarray | None,
               **kwargs: object) -> np.ndarray:
    torch = pytest.importorskip("torch")
    out = torch.nn.functional.conv2d(
        torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w.astype(np.float64)),
        None if bias is None else torch.from_numpy(bias.astype(np.float64)), **kwargs).numpy()
    return out if add is None else out + add


CASES = [  # n, c_in, h, w, c_out, k, stride, padding, dilation, bias, add
    (2, 40, 13, 11, 36, (3, 3), 1, 1, 1, True, "same"),
    (1, 3, 17, 19, 70, (3, 3), 2, 1, 1, True, None),  # K = 27: scalar weight loads
    (3, 16, 12, 9, 24, (2, 5), (1, 2), (0, 3), (2, 1), False, "per-channel"),
    (2, 64, 7, 7, 33, (1, 1), 1, 0, 1, True, "same"),
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_matches_torch_float64_where_available(device: gpucore.Device, case: tuple,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    emulated_subset(device, case in (CASES[0], CASES[2]))
    n, c_in, h, w, c_out, k, stride, padding, dilation, has_bias, add_kind = case
    calls = []

    def spy(*args: object, **kwargs: object) -> Tensor:
        calls.append(kwargs["out_hw"])
        return _real_conv2d_matrix(*args, **kwargs)

    monkeypatch.setattr(csm, "conv2d_matrix", spy)
    monkeypatch.setattr(csm, "MIN_TILES", 0)  # small sizes take this kernel too
    rng = np.random.default_rng(c_in * c_out)
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float16)
    weight = (rng.standard_normal((c_out, c_in, *k)) / np.sqrt(c_in * k[0] * k[1])
              ).astype(np.float16)
    bias = rng.standard_normal(c_out).astype(np.float16) if has_bias else None
    expected = _reference(x, weight, bias, None, stride=stride, padding=padding,
                          dilation=dilation)
    add = None
    if add_kind is not None:
        shape = expected.shape if add_kind == "same" else (n, c_out, 1, 1)
        add = rng.standard_normal(shape).astype(np.float16)
        expected = expected + add
    upload = lambda a: None if a is None else Tensor.from_numpy(a, device=device)  # noqa: E731
    got = conv2d(upload(x), upload(weight), upload(bias), stride=stride, padding=padding,
                 dilation=dilation, add=upload(add)).numpy()
    assert calls, "conv2d did not take the subgroup-matrix kernel"
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() / np.abs(expected).max() < 2e-3


def test_two_groups_and_small_outputs_fall_back_where_available(
        device: gpucore.Device, monkeypatch: pytest.MonkeyPatch) -> None:
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 8, 9, 10)).astype(np.float16)
    weight = rng.standard_normal((6, 4, 3, 3)).astype(np.float16)
    tx, tw = Tensor.from_numpy(x, device=device), Tensor.from_numpy(weight, device=device)
    assert not csm.applies(tx, tw, 1, (9, 10))  # one tile: the portable kernel splits K
    monkeypatch.setattr(csm, "MIN_TILES", 0)
    assert csm.applies(tx, tw, 1, (9, 10)) and not csm.applies(tx, tw, 2, (9, 10))
    got = conv2d(Tensor.from_numpy(x, device=device), Tensor.from_numpy(weight, device=device),
                 padding=1, groups=2).numpy()
    expected = _reference(x, weight, None, None, padding=1, groups=2)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 2e-3


@pytest.mark.parametrize("tile", csm.CONV_TILES.values(), ids=lambda t: t.name)
def test_every_tile_matches_torch_where_available(device: gpucore.Device,
                                                  tile: sm.MatrixTile) -> None:
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    emulated_subset(device, tile in (csm.CONV_TILES["32x32"], csm.CONV_TILES["64x64"]))
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 24, 21, 18)).astype(np.float16)
    weight = (rng.standard_normal((150, 24, 3, 3)) / 15).astype(np.float16)
    bias = rng.standard_normal(150).astype(np.float16)
    expected = _reference(x, weight, bias, None, stride=2, padding=2, dilation=2)
    add = rng.standard_normal(expected.shape).astype(np.float16)
    got = csm.conv2d_matrix(*(Tensor.from_numpy(v, device=device) for v in (x, weight, bias)),
                            stride=(2, 2), padding=(2, 2), dilation=(2, 2),
                            out_hw=expected.shape[2:], add=Tensor.from_numpy(add, device=device),
                            add_mode=1, tile=tile).numpy()
    expected = expected + add
    assert np.abs(got - expected).max() / np.abs(expected).max() < 2e-3


@pytest.mark.parametrize(("slope", "scale"), [(0.2, 1.0), (None, 0.2)])
def test_leaky_and_scaled_epilogue_matches_torch_where_available(
        device: gpucore.Device, monkeypatch: pytest.MonkeyPatch, slope: float | None,
        scale: float) -> None:
    # ESRGAN's dense block: leaky_relu(conv) for conv1-4, 0.2 * conv5 + x (in the epilogue)
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    monkeypatch.setattr(csm, "MIN_TILES", 0)
    calls = []

    def spy(*args: object, **kwargs: object) -> Tensor:
        calls.append(kwargs["leaky"])
        return _real_conv2d_matrix(*args, **kwargs)

    monkeypatch.setattr(csm, "conv2d_matrix", spy)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 24, 13, 11)).astype(np.float16)  # K 216: test_every_tile's
    weight = (rng.standard_normal((32, 24, 3, 3)) / 15).astype(np.float16)
    bias = rng.standard_normal(32).astype(np.float16)
    add = rng.standard_normal((1, 32, 13, 11)).astype(np.float16)
    y = _reference(x, weight, bias, None, padding=1)
    expected = scale * (y if slope is None else np.maximum(y, slope * y)) + add
    upload = lambda a: Tensor.from_numpy(a, device=device)  # noqa: E731
    got = conv2d(upload(x), upload(weight), upload(bias), padding=1, add=upload(add),
                 negative_slope=slope, scale=scale).numpy()
    assert calls == [(1.0 if slope is None else slope, scale)]
    assert np.abs(got - expected).max() / np.abs(expected).max() < 2e-3
    plain = scale * y + add  # the activation visibly changed the result
    assert slope is None or np.abs(plain - expected).max() > 0.1 * np.abs(expected).max()


def test_reads_the_first_in_channels_where_available(device: gpucore.Device,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    monkeypatch.setattr(csm, "MIN_TILES", 0)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 40, 13, 11)).astype(np.float16)  # 24 of 40 read: K 216
    weight = (rng.standard_normal((32, 24, 3, 3)) / 15).astype(np.float16)
    expected = _reference(x[:, :24], weight, None, None, padding=1)
    got = conv2d(Tensor.from_numpy(x, device=device), Tensor.from_numpy(weight, device=device),
                 padding=1, in_channels=24).numpy()
    assert np.abs(got - expected).max() / np.abs(expected).max() < 2e-3


def test_narrow_tiles_take_the_upscalers_convs_where_available(
        device: gpucore.Device) -> None:
    # RRDBNet's dense-block conv at 256² (32 x 128) and its last conv past 64-pixel tiles'
    # grid (16 x 128; scaled down: a grid of 1024 x workgroups), as the rule routes them
    if not sm.available(device) or any(c.emulated for c in device.info.matrix_configs):
        pytest.skip("narrow tiles run on Dawn with matrix units (emulated: too slow for CI)")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 64, 256, 256)).astype(np.float16)
    weight = (rng.standard_normal((32, 64, 3, 3)) / 24).astype(np.float16)
    assert csm.choose_conv_tile(32, 256 * 256, 576) == csm.CONV_TILES["32x128"]
    expected = _reference(x, weight, None, None, padding=1)
    got = conv2d(Tensor.from_numpy(x, device=device), Tensor.from_numpy(weight, device=device),
                 padding=1).numpy()
    assert np.abs(got - expected).max() / np.abs(expected).max() < 2e-3


def test_images_read_in_place(device: gpucore.Device) -> None:
    """images=(start, count): the images of x read where they lie, bit for bit the conv of
    their copy (the 64 x 64 kernel of the test above: no compile of its own)."""
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    rng = np.random.default_rng(12)
    x = rng.standard_normal((5, 24, 21, 18)).astype(np.float16)
    weight = (rng.standard_normal((150, 24, 3, 3)) / 15).astype(np.float16)
    bias = rng.standard_normal(150).astype(np.float16)
    expected = _reference(x[3:5], weight, bias, None, stride=2, padding=2, dilation=2)
    add = Tensor.from_numpy(rng.standard_normal(expected.shape).astype(np.float16), device=device)
    tile, geometry = csm.CONV_TILES["64x64"], dict(stride=(2, 2), padding=(2, 2),
                                                   dilation=(2, 2), out_hw=expected.shape[2:])
    w_b = [Tensor.from_numpy(v, device=device) for v in (weight, bias)]
    got = csm.conv2d_matrix(Tensor.from_numpy(x, device=device), *w_b, **geometry, add=add,
                            add_mode=1, tile=tile, images=(3, 2)).numpy()
    copied = csm.conv2d_matrix(Tensor.from_numpy(x[3:5], device=device), *w_b, **geometry,
                               add=add, add_mode=1, tile=tile).numpy()
    np.testing.assert_array_equal(got, copied)
    expected = expected + add.numpy()
    assert np.abs(got - expected).max() / np.abs(expected).max() < 2e-3


# --- split K: convs of fewer than MIN_TILES output tiles ---------------------------------


def test_split_kernel_interface() -> None:
    tile = csm.CONV_TILES["64x64"]
    source = csm.source(tile, 3, 3, 8, split=True)
    storage = _wgsl.parse(source).storage
    assert [b.name for b in storage] == ["x", "weight", "bias", "add", "out"]
    assert storage[-1].scalar == "f32"  # the f32 partial sums; conv2d_splitk casts to f16
    # the loop's trip count is uniform (from the workgroup id, not a private variable)
    assert "min(params.split_steps, k_steps_all - min(k_steps_all, wid.z *" in source
    assert "k0 = k_first + (t + 1u) * 32u;" in source
    assert "k_first" not in csm.source(tile, 3, 3, 8)
    # the bounds-free kernel checks the image border only
    free = csm.source(tile, 3, 3, 8, split=True, aligned=True)
    assert "k >= params.k_total" not in free and "row < params.c_out" not in free
    assert "iy >= params.h || ix >= params.w" in free
    assert "row < params.c_out" in source


# (batch, c_in, size, c_out, stride) of every 3x3 conv of an SD 1.5 UNet step that is not in
# the tuner's list of those with enough tiles, and the split count each gets with 64 x 64
# tiles (tile_splits) and whatever the tile (split_count: the rule's 128 x 128 tiles for the
# deep convs at 16 x 16 and 32 x 32 make fewer than MIN_TILES tiles and split more).
_SD15_SPLITS = {(2, 320, 64, 320, 2): 2, (2, 640, 32, 640, 2): 4, (2, 1280, 16, 1280, 2): 9,
                (2, 640, 16, 1280, 1): 4, (2, 1280, 16, 1280, 1): 7, (2, 1920, 16, 1280, 1): 7,
                (2, 2560, 16, 1280, 1): 7, (2, 1280, 8, 1280, 1): 9,
                (2, 2560, 8, 1280, 1): 16}
_SD15_CONV_SPLITS = {**_SD15_SPLITS, (2, 1280, 16, 1280, 1): 9, (2, 1920, 16, 1280, 1): 13,
                     (2, 2560, 16, 1280, 1): 16, (2, 1920, 32, 640, 1): 13,
                     (2, 1280, 32, 640, 1): 9, (2, 960, 32, 640, 1): 6,
                     (2, 1280, 32, 1280, 1): 7}


@pytest.mark.nodevice
def test_sd15_unet_convs_all_take_the_matrix_units() -> None:
    from gpustd.nn import _conv_matrix_tuning as tuning

    assert set(_SD15_SPLITS) == set(tuning.SD_SPLIT_CONVS)
    small = csm.CONV_TILES["64x64"]
    for batch, c_in, size, c_out, stride in tuning.SD_CONVS[:len(tuning.SD_SPLIT_CONVS) + 11]:
        out = (size - 1) // stride + 1
        pixels, k_total = batch * out * out, c_in * 9
        assert csm.routed(c_out, pixels, k_total), (batch, c_in, size, c_out, stride)
        splits = csm.tile_splits(c_out, pixels, k_total, small)
        assert splits == _SD15_SPLITS.get((batch, c_in, size, c_out, stride), 1)
        assert csm.split_count(c_out, pixels, k_total) == \
            _SD15_CONV_SPLITS.get((batch, c_in, size, c_out, stride), 1)
        # <= ~8 workgroups per multiprocessor, each split >= 40 K steps of 32
        assert splits == 1 or csm.tile_count(c_out, pixels, small) * (splits - 1) < \
            8 * csm.MULTIPROCESSORS
        assert splits == 1 or k_total / 32 / splits >= 40
    # conv_out (320 -> 4 at 64 x 64: 128 tiles) splits too; a shallow K does not
    assert csm.split_count(4, 2 * 64 * 64, 2880) == 2
    assert not csm.routed(6, 90, 72)
    # the 1280-channel convs take the bounds-free kernel
    assert csm.aligned(small, 1280, 512, 11520) and csm.aligned(small, 1280, 128, 23040)
    # plain 1x1 convs below MIN_TILES stay on the GEMM (conv2d passes split=False)
    assert not csm.routed(1280, 512, 2560, split=False) and csm.routed(1280, 512, 2560)


def _split_case(device: gpucore.Device, seed: int, shape: tuple, splits: int | None,
                add_kind: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(got, expected) of conv2d_matrix in `splits` against torch's float64 conv, in the
    64 x 64 tile (32 x 32 on emulated units: conftest.emulated_tile; CI: 15 -> 8 s of CPU)."""
    n, c_in, h, w, c_out, k, stride, padding = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float16)
    weight = (rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)
              ).astype(np.float16)
    bias = rng.standard_normal(c_out).astype(np.float16)
    expected = _reference(x, weight, bias, None, stride=stride, padding=padding)
    add = None
    if add_kind is not None:
        add_shape = expected.shape if add_kind == "same" else (n, c_out, 1, 1)
        add = rng.standard_normal(add_shape).astype(np.float16)
        expected = expected + add
    up = [None if v is None else Tensor.from_numpy(v, device=device)
          for v in (x, weight, bias, add)]
    got = csm.conv2d_matrix(
        *up[:3], stride=(stride, stride), padding=(padding, padding), dilation=(1, 1),
        out_hw=expected.shape[2:], add=up[3],
        add_mode={None: 0, "same": 1, "per-channel": 2}[add_kind],
        tile=emulated_tile(device, csm.CONV_TILES["64x64"]), splits=splits).numpy()
    return got, expected


SPLIT_CASES = [  # n, c_in, h, w, c_out, k, stride, padding; splits; add
    ((2, 150, 9, 7, 70, 3, 1, 1), 3, "same"),  # ragged channels, K 1350 = 42.2 steps of 32
    ((1, 96, 11, 10, 64, 3, 2, 1), 5, "per-channel"),
    ((2, 40, 6, 6, 33, 1, 1, 0), 2, None),  # 1x1 with K 40: the last split is ragged
    ((1, 64, 5, 5, 20, 3, 1, 1), 40, None),  # more splits asked than K steps (18)
    ((2, 64, 8, 8, 64, 3, 1, 1), 2, "same"),  # aligned: C_out, pixels, K fill the tile
    ((1, 128, 8, 8, 128, 3, 1, 1), 1, None),  # aligned, unsplit
]


@pytest.mark.parametrize(("shape", "splits", "add_kind"), SPLIT_CASES,
                         ids=[str(i) for i in range(len(SPLIT_CASES))])
def test_split_k_matches_torch_float64_where_available(device: gpucore.Device, shape: tuple,
                                                       splits: int, add_kind: str | None
                                                       ) -> None:
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    emulated_subset(device, shape in (SPLIT_CASES[0][0], SPLIT_CASES[4][0]))
    n, c_in, h, w, c_out, k = shape[:6]
    bounds_free = c_out % 64 == 0 and n * h * w % 64 == 0 and c_in * k * k % 32 == 0
    assert csm.aligned(csm.CONV_TILES["64x64"], c_out, n * h * w, c_in * k * k) == bounds_free
    got, expected = _split_case(device, 5, shape, splits, add_kind)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() / np.abs(expected).max() < 2e-3
    again, _ = _split_case(device, 5, shape, splits, add_kind)
    assert np.array_equal(got, again)  # the finish sums the splits in a fixed order


def test_conv2d_routes_few_deep_tiles_to_split_k_where_available(
        device: gpucore.Device, monkeypatch: pytest.MonkeyPatch) -> None:
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    calls = []

    def spy(*args: object, **kwargs: object) -> Tensor:
        calls.append(kwargs["out_hw"])  # the routed tile, 32 x 32 on emulated units
        return _real_conv2d_matrix(*args, **{**kwargs, "tile": emulated_tile(device,
                                                                             kwargs["tile"])})

    monkeypatch.setattr(csm, "conv2d_matrix", spy)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 480, 10, 10)).astype(np.float16)  # 4 tiles, K 4320
    weight = (rng.standard_normal((70, 480, 3, 3)) / 66).astype(np.float16)
    assert csm.split_count(70, 100, 4320) == 3
    got = conv2d(Tensor.from_numpy(x, device=device), Tensor.from_numpy(weight, device=device),
                 padding=1).numpy()
    expected = _reference(x, weight, None, None, padding=1)
    assert calls == [(10, 10)]
    assert np.abs(got - expected).max() / np.abs(expected).max() < 2e-3
