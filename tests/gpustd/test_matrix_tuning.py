"""The matrix-unit kernels' tile choice through the autotuner (gpustd/gemm/matrix_tuning.py,
gpustd/nn/_conv_matrix_tuning.py): shape classes, candidates, registration and the routing
(the dispatchers hand the kernels the tuner's tile) run everywhere (nothing compiles);
the promise that every candidate computes the default's result bit for bit, and that tuning
never changes matmul's or conv2d's result, runs on Dawn adapters with subgroup matrices (the
GPU machine, GPUCORE_RUNTIME=dawn), and for the conv candidates of one shape on adapters with
shader-f16 and subgroups, with the matrix units emulated (conftest.matrix_device)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import checkout_env, emulated_subset, matrix_device
from support import ROOT

import gpucore
from gpucore import autotune
from gpustd import Tensor, linalg
from gpustd.gemm import dispatch, matrix_tuning, matrix_units, tuning
from gpustd.gemm import plan as gemm_plan
from gpustd.gemm.matrix_tile import on_device
from gpustd.nn import _conv_matrix_tuning as conv_tune
from gpustd.nn import _conv_subgroup_matrix as conv_matrix
from gpustd.nn import conv2d

pytestmark = pytest.mark.usefixtures("cache_home")  # conftest: private cache, tuning off


@pytest.fixture
def device(device: gpucore.Device) -> gpucore.Device:
    """Here, the adapter's Device with subgroup matrices, emulated where it has none."""
    return matrix_device(device)


def fake_device(storage: int = 48 * 1024, grid: int = 65535) -> Any:
    return SimpleNamespace(limits={"max-compute-workgroup-storage-size": storage,
                                   "max-compute-invocations-per-workgroup": 1024,
                                   "max-compute-workgroups-per-dimension": grid})


def remember(device: gpucore.Device, op: str, shape_class: str, winner: str,
             default: str) -> None:
    """Put `winner` in the tuner's cache as if a tuning had chosen it."""
    autotune._store(device, autotune.Result(op, shape_class, winner, default,
                                            {winner: 1.0, default: 2.0}))


# -- everywhere: nothing here compiles a subgroup-matrix kernel ------------------------
def test_shape_classes_bucket_sizes_and_keep_what_changes_the_kernel() -> None:
    assert matrix_tuning.gemm_class(8192, 320, 320, 1, False, True) == "f16/nt/m8192/n384/k384/b1"
    assert matrix_tuning.gemm_class(8000, 300, 330, 1, False, True) == "f16/nt/m8192/n384/k384/b1"
    assert matrix_tuning.gemm_class(8192, 320, 320, 1, True, False) == "f16/tn/m8192/n384/k384/b1"
    assert matrix_tuning.gemm_class(8192, 320, 320, 1, False, True, "f16") == \
        "f16/nt/m8192/n384/k384/b1/acc16"
    assert conv_tune.conv_class(3, 3, (1, 1), 320, 2880, 8192) == "f16/3x3/s1x1/co384/k3072/p8192"
    assert conv_tune.conv_class(3, 3, (2, 2), 320, 2880, 8192) != \
        conv_tune.conv_class(3, 3, (1, 1), 320, 2880, 8192)
    assert conv_tune.conv_class(1, 1, (1, 1), 320, 2880, 8192) != \
        conv_tune.conv_class(3, 3, (1, 1), 320, 2880, 8192)


def test_candidates_accumulate_alike_and_fit_the_device() -> None:
    """f32 accumulators and K steps of whole 16-deep slices (the module docstring's argument);
    no f16 accumulators, which would round differently."""
    tiles = [*matrix_tuning.GEMM_TILES.values(), *conv_matrix.CONV_TILES.values()]
    assert all(t.acc == "f32" and t.bk % 16 == 0 for t in tiles)
    everything = fake_device()
    assert matrix_tuning.gemm_candidates(everything, 500, 700) == tuple(matrix_tuning.GEMM_TILES)
    assert conv_tune.conv_candidates(everything, 320, 8192) == tuple(
        name for name in conv_matrix.CONV_TILES if name not in conv_matrix.NARROW_ONLY)
    # the narrow tiles only for the upscalers' narrow convs over many pixels
    assert set(conv_matrix.NARROW_ONLY) <= set(conv_tune.conv_candidates(everything, 32,
                                                                          512 * 512))
    assert "32x128" not in conv_tune.conv_candidates(everything, 32, 128 * 128)
    # 16 KiB of workgroup memory: no 128 x 128 tile with K steps of 32 (28 KiB)
    assert "128x128" not in matrix_tuning.gemm_candidates(fake_device(storage=16384), 500, 700)
    assert "128x128k16" in matrix_tuning.gemm_candidates(fake_device(storage=24576), 500, 700)
    # a grid of at most 100 workgroups a side: 6401 pixels need 101 columns of 64
    assert conv_tune.conv_candidates(fake_device(grid=100), 64, 6401) == (
        "128x128", "160x128", "256x128", "128x256")
    assert matrix_tuning.gemm_candidates(fake_device(grid=100), 6401, 64) == (
        "128x128", "128x128k16", "128x256", "128x160", "256x128")


def test_f16_accumulation_has_its_own_candidates_and_classes(
        first_device: gpucore.Device, monkeypatch: pytest.MonkeyPatch) -> None:
    """GPUSTD_GEMM_ACCUMULATE=f16: every candidate accumulates in f16 (so they add alike, as
    the f32 ones do), in classes of their own; the rule's tile is one of them."""
    assert all(t.acc == "f16" for t in matrix_tuning.GEMM_TILES_ACC16.values())
    assert set(matrix_tuning.GEMM_TILES) < set(matrix_tuning.GEMM_TILES_ACC16)
    everything = fake_device()
    assert matrix_tuning.gemm_candidates(everything, 4096, 4096, "f16") == \
        tuple(matrix_tuning.GEMM_TILES_ACC16)
    assert "256x256" not in matrix_tuning.gemm_candidates(fake_device(storage=40960), 4096,
                                                          4096, "f16")
    device = matrix_device(first_device)
    if device.info.matrix_config("f16", "f16", 16, 16, 16) is None:
        pytest.skip(f"{device.info.label} has no f16 result fragments, not even emulated")
    monkeypatch.setenv(matrix_units.ACCUMULATE_ENV, "f16")
    tile = matrix_tuning.gemm_tile(device, 4096, 4096, 4096, 1, False, True)
    storage = device.limits["max-compute-workgroup-storage-size"]
    assert tile.acc == "f16" and tile == matrix_units.choose_tile(
        4096, 4096, 1, k=4096, storage=storage, accumulate="f16")
    remember(device, "gemm_sm", "f16/nt/m4096/n4096/k4096/b1/acc16", "128x128", "256x256")
    assert matrix_tuning.gemm_tile(device, 4096, 4096, 4096, 1, False, True) == \
        matrix_tuning.GEMM_TILES_ACC16["128x128"]
    nn = matrix_tuning.gemm_tile(device, 4096, 4096, 4096, 1, False, False)  # B K x N
    assert nn == matrix_units.choose_tile(4096, 4096, 1, k=4096, storage=storage,
                                          accumulate="f16", trans_b=False)
    monkeypatch.delenv(matrix_units.ACCUMULATE_ENV)  # the f32 class is another
    assert matrix_tuning.gemm_tile(device, 4096, 4096, 4096, 1, False, True).acc == "f32"


def test_registered_with_the_rules_as_defaults(first_device: gpucore.Device,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"gemm_sm", "conv_sm"} <= set(autotune.registered())
    if not matrix_units.available(first_device):
        assert autotune.problems(first_device, ["gemm_sm", "conv_sm"]) == []
        monkeypatch.setattr(matrix_units, "available", lambda device: True)
    gemm = autotune.problems(first_device, ["gemm_sm"])
    expected = {matrix_tuning.gemm_class(m, n, k, batch, layout[0] == "t", layout[1] == "t")
                for m, k, n, batch, layout in tuning.SD_SHAPES}
    assert {p.shape_class for p in gemm} == expected
    square = next(p for p in gemm if p.shape_class == "f16/nn/m4096/n4096/k4096/b1")
    fitting = tuple(name for name, t in matrix_tuning.GEMM_TILES.items() if t.shared_bytes()
                    <= first_device.limits["max-compute-workgroup-storage-size"])
    assert square.candidates == fitting and square.default in fitting
    assert square.default == next(name for name in ("256x128", "128x256", "128x128k16")
                                  if name in fitting)
    conv = autotune.problems(first_device, ["conv_sm"])
    classes = {p.shape_class: p for p in conv}
    assert len(classes) == len(conv)
    # SD 1.5's 320-channel convs at 64 x 64, the VAE decoder's last convs at 512 x 512
    storage = first_device.limits["max-compute-workgroup-storage-size"]
    fit = {name: t.shared_bytes() <= storage for name, t in conv_matrix.CONV_TILES.items()}
    assert classes["f16/3x3/s1x1/co384/k3072/p8192"].default == (
        "320x64" if fit["320x64"] else "160x128")
    assert classes["f16/3x3/s1x1/co128/k1536/p262144"].default == (
        "128x256" if fit["128x256"] else "128x128")
    assert "f16/3x3/s1x1/co3/k1536/p262144" in classes
    # the UNet's 1280 channels at 16 x 16 (512 pixels: 160 tiles of 64 x 64) split K there
    deep = conv_tune.conv_class(3, 3, (1, 1), 1280, 11520, 512)
    assert classes[deep].default == "128x128"  # deep: 128 x 128 tiles, split K
    for p in conv:
        assert p.default in p.candidates, p.shape_class


def test_rule_unless_a_winner_is_cached(first_device: gpucore.Device) -> None:
    """Tuning off: the rule's tile, no trial run; a cached winner replaces it."""
    device = first_device
    storage = device.limits["max-compute-workgroup-storage-size"]
    assert matrix_tuning.gemm_tile(device, 4096, 4096, 4096, 1, False, False) == \
        matrix_units.choose_tile(4096, 4096, 1, k=4096, storage=storage)
    remember(device, "gemm_sm", "f16/nn/m4096/n4096/k4096/b1", "128x128", "64x64k16")
    assert matrix_tuning.gemm_tile(device, 4000, 4096, 4090, 1, False, False) == \
        matrix_tuning.GEMM_TILES["128x128"]
    shapes = ((2, 320, 64, 64), (320, 320, 3, 3), (1, 1), (1, 1), (1, 1), (64, 64))
    assert conv_tune.conv_tile(device, *shapes) == conv_matrix.choose_conv_tile(
        320, 8192, storage=storage)
    remember(device, "conv_sm", "f16/3x3/s1x1/co384/k3072/p8192", "32x32", "64x64")
    assert conv_tune.conv_tile(device, *shapes) == conv_matrix.CONV_TILES["32x32"]


class KernelSpy:
    """Stands in for a kernel module's `_kernel`: notes the tile, dispatches nothing."""

    def __init__(self) -> None:
        self.tiles: list[Any] = []

    def __call__(self, tile: Any, *args: Any) -> Any:
        self.tiles.append(tile)
        return SimpleNamespace(dispatch=lambda *a, **k: None)


def test_the_dispatchers_ask_the_tuner(first_device: gpucore.Device,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """gemm.dispatch and nn.conv2d hand the kernels the tuner's tile (the kernels never ask),
    as the device compiles it (rolled on CPU adapters: matrix_tile.on_device)."""
    device = first_device
    gemm_spy, conv_spy = KernelSpy(), KernelSpy()
    monkeypatch.setattr(matrix_units, "_kernel", gemm_spy)
    monkeypatch.setattr(conv_matrix, "_kernel", conv_spy)
    monkeypatch.setattr(matrix_units, "available", lambda device: True)
    monkeypatch.setattr(conv_matrix, "applies", lambda *args, **kwargs: True)
    remember(device, "gemm_sm", "f16/nt/m192/n96/k48/b2", "128x128k16", "64x64")
    buf = Tensor.empty((4,), np.float16, device=device).buffer
    plan = gemm_plan.batch_plan((2,), (2,), (2,), 150 * 40, 40 * 70)
    dispatch.record_gemm(buf, buf, buf, None, m=150, n=70, k=40, trans_a=False,
                         trans_b=True, alpha=1.0, beta=0.0, plan=plan)
    assert gemm_spy.tiles == [on_device(matrix_tuning.GEMM_TILES["128x128k16"], device)]
    x = Tensor.empty((2, 5, 33, 31), np.float16, device=device)
    weight = Tensor.empty((70, 5, 3, 3), np.float16, device=device)
    conv2d(x, weight, None, stride=2, padding=1)
    remember(device, "conv_sm", "f16/3x3/s2x2/co96/k48/p768", "32x32", "64x64")
    conv2d(x, weight, None, stride=2, padding=1)
    assert conv_spy.tiles == [on_device(conv_matrix.choose_conv_tile(70, 544), device),
                              on_device(conv_matrix.CONV_TILES["32x32"], device)]


def test_conv_candidates_split_k_alike(first_device: gpucore.Device,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A conv that splits K splits it at the same places whichever candidate tile runs it
    (the split count is the conv's, not the tile's: a 128 x 128 tile with its own count
    would add other partial sums than the 64 x 64 default), and the finish sums as many."""
    dispatched: list[tuple[str, Any]] = []

    def spy(name: str) -> Any:
        return lambda *args, **kwargs: SimpleNamespace(
            groups_for=lambda size: 1,
            dispatch=lambda grid, *a, **k: dispatched.append((name, (grid, k))))

    monkeypatch.setattr(conv_matrix, "_kernel", lambda tile, *args: spy(f"conv {tile.bk}")())
    monkeypatch.setattr(conv_matrix, "kernel", lambda *args, **kwargs: spy("finish")())
    device = first_device
    for batch, c_in, size, c_out, stride in conv_tune.SD_CONVS:
        out = (size - 1) // stride + 1
        if all(conv_matrix.tile_splits(c_out, batch * out * out, c_in * 9, tile) == 1
               for tile in conv_matrix.CONV_TILES.values()):
            continue  # no tile would split it
        x = Tensor.empty((batch, c_in, size, size), np.float16, device=device)
        weight = Tensor.empty((c_out, c_in, 3, 3), np.float16, device=device)
        cuts = set()
        for name in conv_tune.conv_candidates(fake_device(), c_out, batch * out * out):
            dispatched.clear()
            tile = conv_matrix.CONV_TILES[name]
            conv_matrix.conv2d_matrix(x, weight, None, stride=(stride, stride), padding=(1, 1),
                                      dilation=(1, 1), out_hw=(out, out), tile=tile)
            (label, (grid, params)), *finish = dispatched
            assert label == f"conv {tile.bk}"
            splits = grid[2]
            assert [(f, summed["splits"]) for f, (_, summed) in finish] == \
                ([("finish", splits)] if splits > 1 else [])
            # the K where each split starts, and how many
            cuts.add(tuple(z * params["split_steps"] * tile.bk for z in range(splits)))
        assert len(cuts) == 1, ((batch, c_in, size, c_out, stride), cuts)


def test_tune_command_lists_them_only_with_subgroup_matrices(cache_home: Path) -> None:
    """A fresh process: importing gpustd registers both ops; the problems are listed where
    the default device has f16 subgroup matrices and none elsewhere."""
    listing = subprocess.run(
        [sys.executable, "-m", "gpucore", "tune", "--list", "--ops", "gemm_sm,conv_sm"],
        env=checkout_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    if matrix_units.available(gpucore.default_device()):
        assert any(line.startswith("gemm_sm f16/nn/m4096/n4096/k4096/b1") for line in lines)
        assert any(line.startswith("conv_sm f16/3x3/s1x1/co384/k3072/p8192") for line in lines)
    else:
        assert lines[0].startswith("device:") and lines[1].startswith("cache:"), lines


# -- Dawn with subgroup matrices: the bits -------------------------------------------
def skip_unless_available(device: gpucore.Device) -> None:
    if not matrix_units.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")


GEMM_CASES = [  # m, k, n, batch, trans_a, trans_b: K not a multiple of 32 (BK 16 vs 32);
    # the last fills 64 x 64 and 64 x 128 tiles exactly (their bounds-free kernels) but not
    # 128 x 128 ones (checked): the two kinds of kernel give the same bits
    (150, 200, 130, 2, False, True), (77, 40, 260, 1, True, False),
    (129, 1000, 70, 1, False, False), (192, 96, 256, 2, False, True),
    # split K (matrix_units.split_k): 7 splits, cut at the same K for every tile
    (154, 2000, 640, 1, False, True),
]


@pytest.mark.parametrize("accumulate", ["f32", "f16"])
@pytest.mark.parametrize("case", GEMM_CASES, ids=[str(i) for i in range(len(GEMM_CASES))])
def test_every_gemm_candidate_is_bitwise_the_default(device: gpucore.Device, case: tuple,
                                                     accumulate: str) -> None:
    skip_unless_available(device)
    emulated_subset(device, False)  # a minute of compiles there; the conv candidates run
    m, k, n, batch, trans_a, trans_b = case
    rng = np.random.default_rng(m + k)
    a_np = rng.standard_normal((batch, k, m) if trans_a else (batch, m, k)).astype(np.float16)
    b_np = rng.standard_normal((batch, n, k) if trans_b else (batch, k, n)).astype(np.float16)
    bias_np = rng.standard_normal(n).astype(np.float16)
    a, b, bias = (Tensor.from_numpy(v, device=device) for v in (a_np, b_np, bias_np))
    plan = gemm_plan.batch_plan((batch,), (batch,), (batch,), m * k, k * n)

    def run(name: str) -> np.ndarray:
        c = Tensor.empty((batch, m, n), np.float16, device=device)
        matrix_units.record_gemm_matrix(
            a.buffer, b.buffer, c.buffer, bias.buffer, has_bias=True, m=m, n=n, k=k,
            trans_a=trans_a, trans_b=trans_b, alpha=1.0, beta=0.0, plan=plan,
            tile=tiles[name])
        return c.numpy()

    tiles = matrix_tuning.GEMM_TILES_ACC16 if accumulate == "f16" else matrix_tuning.GEMM_TILES
    default = run(next(name for name, t in tiles.items()
                       if t == matrix_units.choose_tile(m, n, batch, k=k,
                                                        accumulate=accumulate,
                                                        trans_b=trans_b)))
    op_a = a_np.transpose(0, 2, 1) if trans_a else a_np
    op_b = b_np.transpose(0, 2, 1) if trans_b else b_np
    expected = op_a.astype(np.float64) @ op_b.astype(np.float64) + bias_np
    # f16 accumulators: an f16 rounding per 16-deep product, about 10x f32's error
    assert np.abs(default - expected).max() / np.abs(expected).max() < (
        2e-3 if accumulate == "f32" else 2e-2)
    for name in matrix_tuning.gemm_candidates(device, m, n, accumulate):
        assert run(name).tobytes() == default.tobytes(), f"tile {name} changed the result"


CONV_CASES = [  # n, c_in, h, w, c_out, stride: K = 36 and 333, neither a multiple of 32;
    # the SD UNet's 1280 channels at 16 x 16, which split K (9 ways; the 64 x 64 tile alone
    # would split it 7 ways, the 32 x 32 one not at all)
    (2, 4, 23, 21, 70, 1), (1, 37, 30, 17, 150, 2), (2, 1280, 16, 16, 1280, 1),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
def test_every_conv_candidate_is_bitwise_the_default(device: gpucore.Device,
                                                     case: tuple) -> None:
    skip_unless_available(device)
    emulated_subset(device, case == CONV_CASES[0])
    torch = pytest.importorskip("torch")
    n, c_in, h, w, c_out, stride = case
    rng = np.random.default_rng(c_in)
    x_np = rng.standard_normal((n, c_in, h, w)).astype(np.float16)
    w_np = (rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(9 * c_in)).astype(np.float16)
    bias_np = rng.standard_normal(c_out).astype(np.float16)
    expected = torch.nn.functional.conv2d(  # f16 products are exact in f32
        *(torch.from_numpy(v.astype(np.float32)) for v in (x_np, w_np, bias_np)),
        stride=stride, padding=1).numpy().astype(np.float64)
    add_np = rng.standard_normal(expected.shape).astype(np.float16)
    x, weight, bias, add = (Tensor.from_numpy(v, device=device)
                            for v in (x_np, w_np, bias_np, add_np))

    def run(name: str) -> np.ndarray:
        return conv_matrix.conv2d_matrix(x, weight, bias, stride=(stride, stride),
                                         padding=(1, 1), dilation=(1, 1),
                                         out_hw=expected.shape[2:], add=add, add_mode=1,
                                         tile=conv_matrix.CONV_TILES[name]).numpy()

    pixels = n * expected.shape[2] * expected.shape[3]
    default = run(next(name for name, t in conv_matrix.CONV_TILES.items()
                       if t == conv_matrix.choose_conv_tile(c_out, pixels, c_in * 9)))
    expected = expected + add_np
    assert np.abs(default - expected).max() / np.abs(expected).max() < 2e-3
    names = conv_tune.conv_candidates(device, c_out, pixels)
    if any(c.emulated for c in device.info.matrix_configs):  # 160 x 128 (5 x 2 fragments a
        # subgroup) is 18 s of CI's compiles there; a GPU under Dawn runs every candidate
        names = tuple(n for n in names if n in ("64x64", "128x128", "32x32"))
    for name in names:
        assert run(name).tobytes() == default.tobytes(), f"tile {name} changed the result"


def test_tuning_changes_no_bits_of_matmul_or_conv2d(device: gpucore.Device,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Tuned on first use, then each candidate forced as the cached winner: the same bits."""
    skip_unless_available(device)
    emulated_subset(device, False)  # every candidate of both ops: a minute of compiles there
    monkeypatch.setattr(conv_matrix, "MIN_TILES", 0)  # a small conv takes the matrix kernel
    rng = np.random.default_rng(5)
    a = Tensor.from_numpy(rng.standard_normal((3, 97, 72)).astype(np.float16), device=device)
    b = Tensor.from_numpy(rng.standard_normal((83, 72)).astype(np.float16), device=device)
    x = Tensor.from_numpy(rng.standard_normal((2, 12, 19, 22)).astype(np.float16),
                          device=device)
    w = Tensor.from_numpy((rng.standard_normal((90, 12, 3, 3)) / 10).astype(np.float16),
                          device=device)
    ops = {"gemm_sm": lambda: linalg.matmul(a, b, trans_b=True).numpy(),
           "conv_sm": lambda: conv2d(x, w, padding=1).numpy()}
    for op, compute in ops.items():
        untuned = compute()
        with autotune.tuning():
            assert compute().tobytes() == untuned.tobytes()
        (shape_class, entry), = autotune.cached(device)[op].items()
        assert len(entry["ms"]) >= 3, entry
        for name in entry["ms"]:
            remember(device, op, shape_class, name, entry["default"])
            assert compute().tobytes() == untuned.tobytes(), f"{op} winner {name}"
