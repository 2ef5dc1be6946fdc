"""GroupNorm (+ SiLU) folded into conv2d's input (gpustd.nn.group_norm_prologue, conv2d's
`prologue`): against torch's float64 GroupNorm -> SiLU -> conv2d on the CPU, on the portable
kernel (every adapter), on the matrix-unit kernel's gather (run here through a harness
kernel, since the kernel itself compiles on Dawn only) and on the matrix-unit kernel itself
where a device has subgroup matrices (Dawn on a GPU)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import relative_error

import gpucore
from gpucore import Kernel, _wgsl
from gpustd import Tensor
from gpustd.gemm import matrix_units as sm
from gpustd.nn import Conv2d, GroupNorm, conv2d, group_norm, group_norm_prologue
from gpustd.nn import _conv_matrix_source as wgsl_source
from gpustd.nn import _conv_subgroup_matrix as csm


@pytest.fixture(autouse=True)
def fused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernels' own prologue (gpustd.nn.prologue.FUSED is off by default)."""
    from gpustd.nn import prologue

    monkeypatch.setattr(prologue, "FUSED", True)


# n, c_in, h, w, groups, c_out, k, stride, padding, silu
CASES = [
    (2, 24, 13, 11, 6, 20, 3, 1, 1, True),  # odd sizes, 4 channels a group, ragged tiles
    (1, 10, 7, 9, 5, 70, 3, 2, 1, False),  # stride 2, no SiLU, 70 outputs (not a tile)
    (3, 16, 5, 6, 4, 8, 1, 1, 0, True),  # a 1x1 conv with a prologue (not the GEMM path)
    (1, 6, 4, 5, 3, 5, 3, 1, 2, True),  # padding 2: two rings of zeros after the norm
]


def _t(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.asarray(a, np.float64))


def _case(case: tuple, dtype: type, seed: int = 0, offset: float = 3.0) -> dict:
    n, c_in, h, w, groups, c_out, k, stride, padding, silu = case
    rng = np.random.default_rng(seed)
    return dict(
        x=(rng.standard_normal((n, c_in, h, w)) * 2 + offset).astype(dtype),
        gamma=rng.uniform(0.5, 1.5, c_in).astype(dtype),
        beta=rng.standard_normal(c_in).astype(dtype),
        weight=(rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)).astype(dtype),
        bias=rng.standard_normal(c_out).astype(dtype),
        groups=groups, stride=stride, padding=padding, silu=silu)


def _reference(c: dict, *, pad_first: bool = False) -> np.ndarray:
    """GroupNorm (+ SiLU) then the conv, torch in float64. pad_first: the classic mistake,
    x's GroupNorm applied to the zero-padded x (its padding then reads silu(shift), not 0)."""
    x, groups = _t(c["x"]), c["groups"]
    if pad_first:
        n, channels = x.shape[:2]
        grouped = x.reshape(n, groups, -1)
        mean = grouped.mean(-1).repeat_interleave(channels // groups, 1)
        var = grouped.var(-1, unbiased=False).repeat_interleave(channels // groups, 1)
        scale = _t(c["gamma"]) / torch.sqrt(var + 1e-5)
        p = c["padding"]
        y = ((F.pad(x, (p, p, p, p)) - mean[..., None, None]) * scale[..., None, None]
             + _t(c["beta"])[:, None, None])
    else:
        y = F.group_norm(x, groups, _t(c["gamma"]), _t(c["beta"]), eps=1e-5)
    if c["silu"]:
        y = F.silu(y)
    return F.conv2d(y, _t(c["weight"]), _t(c["bias"]), stride=c["stride"],
                    padding=0 if pad_first else c["padding"]).numpy()


def _fused(device: gpucore.Device, c: dict, **kwargs: object) -> np.ndarray:
    up = lambda a: Tensor.from_numpy(a, device=device)  # noqa: E731
    x = up(c["x"])
    prologue = group_norm_prologue(x, c["groups"], up(c["gamma"]), up(c["beta"]), 1e-5,
                                   silu=c["silu"])
    return conv2d(x, up(c["weight"]), up(c["bias"]), stride=c["stride"], padding=c["padding"],
                  prologue=prologue, **kwargs).numpy()


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_portable_conv_matches_torch_float32(device: gpucore.Device, case: tuple) -> None:
    c = _case(case, np.float32)
    got = _fused(device, c)
    expected = _reference(c)
    assert relative_error(got, expected) < 2e-6
    if c["padding"]:  # the padding is that of the normalized input: normalizing the
        wrong = _reference(c, pad_first=True)  # zero-padded input differs by far more
        assert relative_error(wrong, expected) > 1e-2


@pytest.mark.parametrize("case", CASES[:2], ids=["0", "1"])
def test_portable_conv_matches_torch_float16(f16_device: gpucore.Device, case: tuple) -> None:
    c = _case(case, np.float16)
    assert relative_error(_fused(f16_device, c), _reference(c)) < 2e-3


def test_portable_split_k_and_residual(device: gpucore.Device) -> None:
    """The split-K kernel (partial sums, then the finish) gathers through the prologue too,
    and the epilogue's residual still adds."""
    c = _case(CASES[0], np.float32, seed=4)
    expected = _reference(c)
    add = np.random.default_rng(5).standard_normal(expected.shape).astype(np.float32)
    got = _fused(device, c, add=Tensor.from_numpy(add, device=device),
                 _plan_override=(64, 64, 3, 8))
    assert relative_error(got, expected + add) < 2e-6


def test_large_offset_costs_no_digits(device: gpucore.Device) -> None:
    """x = 1000 + noise: the table keeps the group's first value as origin, so float32
    loses nothing to the offset (x * scale + shift alone would lose ~3 digits)."""
    c = _case(CASES[3], np.float32, seed=2, offset=1000.0)
    c["x"] = (c["x"] - 1000) * 0.01 + 1000  # std 0.02 around 1000
    assert relative_error(_fused(device, c), _reference(c)) < 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_upsampled_input_matches_torch(device: gpucore.Device, dtype: type) -> None:
    """conv2d(x, upsample=2) (the Upsample2D of SD's decoders) is the conv of
    F.interpolate(x, scale_factor=2, mode="nearest"), with and without a prologue."""
    if dtype == np.float16 and not device.has_f16:
        pytest.skip(f"{device.info.label} has no shader-f16")
    for silu, stride in ((None, 1), (True, 2)):
        c = _case((2, 12, 5, 7, 4, 10, 3, stride, 1, bool(silu)), dtype, seed=6)
        x = _t(c["x"])
        if silu is not None:
            x = F.silu(F.group_norm(x, c["groups"], _t(c["gamma"]), _t(c["beta"]), eps=1e-5))
        expected = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"),
                            _t(c["weight"]), _t(c["bias"]), stride=stride, padding=1).numpy()
        up = lambda a: Tensor.from_numpy(a, device=device)  # noqa: E731
        tx = up(c["x"])
        prologue = None if silu is None else group_norm_prologue(
            tx, c["groups"], up(c["gamma"]), up(c["beta"]), 1e-5, silu=True)
        got = conv2d(tx, up(c["weight"]), up(c["bias"]), stride=stride, padding=1,
                     prologue=prologue, upsample=2).numpy()
        assert relative_error(got, expected) < (2e-6 if dtype == np.float32 else 2e-3)
    with pytest.raises(ValueError, match="upsample must be 1 or 2"):
        conv2d(tx, up(c["weight"]), upsample=3)


def test_unfused_switch(device: gpucore.Device, monkeypatch: pytest.MonkeyPatch) -> None:
    """prologue.FUSED off (the default; bench: BENCH_CONV_PROLOGUE=0) writes the mapped input
    out first: ConvPrologue.apply is GroupNorm + SiLU, and the conv's result stays the same."""
    from gpustd.nn import prologue as prologue_module

    c = _case(CASES[0], np.float32, seed=8)
    fused = _fused(device, c, upsample=2)
    up = lambda a: Tensor.from_numpy(a, device=device)  # noqa: E731
    x = up(c["x"])
    table = group_norm_prologue(x, c["groups"], up(c["gamma"]), up(c["beta"]), 1e-5, silu=True)
    plain = group_norm(x, c["groups"], up(c["gamma"]), up(c["beta"]), 1e-5, silu=True)
    assert relative_error(table.apply(x).numpy(), plain.numpy()) < 1e-6
    assert table == table and {table: 1}[table] == 1  # itself: a Tensor's == is elementwise
    monkeypatch.setattr(prologue_module, "FUSED", False)
    assert relative_error(_fused(device, c, upsample=2), fused) < 2e-6


def test_layers_and_errors(device: gpucore.Device) -> None:
    """GroupNorm.prologue + Conv2d(prologue=) is GroupNorm then Conv2d; a table made for
    another input is refused, saying what to do."""
    rng = np.random.default_rng(7)
    norm = GroupNorm(4, 12, eps=1e-6, device=device)
    conv = Conv2d(12, 9, 3, padding=1, device=device)
    for module in (norm, conv):
        module.load_state_dict({key: rng.standard_normal(p.shape).astype(np.float32)
                                for key, p in module.named_parameters()})
    x = Tensor.from_numpy(rng.standard_normal((2, 12, 6, 7)).astype(np.float32), device=device)
    fused = conv(x, prologue=norm.prologue(x, silu=True)).numpy()
    plain = conv(norm(x, silu=True)).numpy()
    assert relative_error(fused, plain) < 2e-6
    other = Tensor.from_numpy(np.zeros((1, 12, 6, 7), np.float32), device=device)
    with pytest.raises(ValueError, match="group_norm_prologue"):
        conv(x, prologue=norm.prologue(other))


@pytest.mark.usefixtures("young_heap")  # conftest: a collection of its own objects
def test_fused_conv_never_allocates_the_normalized_input(first_device: gpucore.Device) -> None:
    """The memory the fusion is for: the unfused pair's peak holds the normalized x besides
    what the fused conv holds (its output, split-K partial sums, statistics, table)."""
    device = first_device
    c = _case((1, 32, 48, 48, 8, 4, 3, 1, 1, True), np.float32)
    up = lambda a: Tensor.from_numpy(a, device=device)  # noqa: E731
    x, gamma, beta, weight = up(c["x"]), up(c["gamma"]), up(c["beta"]), up(c["weight"])

    def peak(run) -> int:
        gc.collect()  # an earlier test's garbage freed mid-run would hide what the run holds
        device.synchronize()
        base = device.memory_stats().allocated
        device.reset_peak_memory()
        out = run()
        device.synchronize()
        grown = device.memory_stats().peak_allocated - base
        del out
        return grown

    fused = peak(lambda: conv2d(x, weight, padding=1, prologue=group_norm_prologue(
        x, 8, gamma, beta, silu=True)))
    unfused = peak(lambda: conv2d(group_norm(x, 8, gamma, beta, silu=True), weight, padding=1))
    assert unfused - fused >= 0.9 * x.nbytes  # (the table is in the fused peak)


# --- the matrix-unit kernel ---------------------------------------------------------------


@pytest.mark.parametrize("split", [False, True])
def test_matrix_kernel_interface(split: bool) -> None:
    tile = csm.CONV_TILES["64x64"]
    source = csm.source(tile, 3, 3, 8, split=split, prologue=2)
    signature = _wgsl.parse(source)
    assert [b.name for b in signature.storage] == ["x", "weight", "bias", "add", "out", "norm"]
    assert signature.storage[-1].scalar == "f32"
    assert "@binding(6) var<uniform> params" in source
    assert "exp(-y)" in source and "exp(" not in csm.source(tile, 3, 3, 8, split=split,
                                                            prologue=1)
    # no prologue: the bindings as they were, params right after out
    plain = csm.source(tile, 3, 3, 8, split=split)
    assert [b.name for b in _wgsl.parse(plain).storage] == ["x", "weight", "bias", "add", "out"]
    assert "@binding(5) var<uniform> params" in plain and "exp(" not in plain


# The matrix kernel's own load_b (wgsl_source._gather, with the prologue), run by a harness kernel
# that writes the whole patch matrix: the part of the kernel the prologue changes, checked
# on any adapter with shader-f16 (naga cannot parse the subgroup-matrix extension).
_HARNESS = """enable f16;
{params}
@group(0) @binding(0) var<storage, read> x: array<f16>;
@group(0) @binding(1) var<storage, read> norm: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> patches: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;
var<private> col_b: u32;
{gather}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {{
  col_b = gid.x;
  if (col_b >= params.pixels) {{ return; }}
{decode}
  for (var k = 0u; k < params.k_total; k++) {{
    patches[k * params.pixels + col_b] = f32(load_b(k, col_b));
  }}
}}
"""


@pytest.mark.parametrize(("aligned", "upsample"), [(False, False), (True, False),
                                                   (False, True)])
def test_matrix_gather_applies_the_prologue_inside_the_image(f16_device: gpucore.Device,
                                                            aligned: bool,
                                                            upsample: bool) -> None:
    n, c_in, h, w, groups, k, stride, padding, dilation = 2, 6, 7, 5, 3, 3, 2, 2, 1
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((n, c_in, h, w)) * 2 + 1).astype(np.float16)
    gamma = rng.uniform(0.5, 1.5, c_in).astype(np.float16)
    beta = rng.standard_normal(c_in).astype(np.float16)
    hv, wv = (2 * h, 2 * w) if upsample else (h, w)  # the size the conv sees
    ho, wo = (hv + 2 * padding - k) // stride + 1, (wv + 2 * padding - k) // stride + 1
    pixels, k_total = n * ho * wo, c_in * k * k
    source = _HARNESS.format(params=wgsl_source._PARAMS,
                             gather=wgsl_source._gather(k, k, aligned, 2, upsample),
                             decode=wgsl_source._decode(upsample))
    kernel = Kernel(source, name="test/conv_matrix_gather")
    tx = Tensor.from_numpy(x, device=f16_device)
    prologue = group_norm_prologue(tx, groups, Tensor.from_numpy(gamma, device=f16_device),
                                   Tensor.from_numpy(beta, device=f16_device), silu=True)
    patches = Tensor.empty((k_total, pixels), np.float32, device=f16_device)
    kernel.dispatch(kernel.groups_for(pixels), tx, prologue.table, patches, c_in=c_in, h=hv,
                    w=wv, c_out=1, ho=ho, wo=wo, k_total=k_total, pixels=pixels,
                    stride_h=stride, stride_w=stride, pad_h=padding, pad_w=padding,
                    dil_h=dilation, dil_w=dilation, has_bias=0, add_mode=0, split_steps=0,
                    leaky=0, slope=1.0, scale=1.0, x_offset=0)
    y = F.silu(F.group_norm(_t(x), groups, _t(gamma), _t(beta), eps=1e-5))
    if upsample:
        y = F.interpolate(y, scale_factor=2, mode="nearest")
    unfold = F.unfold(y, k, dilation=dilation, padding=padding, stride=stride)  # n, K, ho*wo
    expected = unfold.permute(1, 0, 2).reshape(k_total, pixels).numpy()
    assert relative_error(patches.numpy(), expected) < 2e-3


_real_conv2d_matrix = csm.conv2d_matrix

MATRIX_CASES = [  # case, tile, splits, prologue, upsample
    ((2, 40, 13, 11, 8, 36, 3, 1, 1, True), "64x64", None, True, 1),  # ragged: bound checks
    ((1, 24, 9, 10, 6, 70, 3, 2, 1, False), "32x32", None, True, 1),
    ((2, 64, 8, 8, 32, 64, 3, 1, 1, True), "64x64", 2, True, 1),  # aligned, split K
    ((1, 150, 9, 7, 30, 70, 3, 1, 1, True), "64x64", 3, True, 1),  # ragged, split K
    ((2, 32, 16, 16, 8, 128, 3, 1, 1, True), "128x128", None, True, 1),  # aligned, the VAE's
    ((1, 32, 8, 8, 8, 64, 3, 1, 1, False), "64x64", None, False, 2),  # upsampled, aligned
    ((1, 24, 5, 7, 6, 40, 3, 1, 1, True), "32x32", 2, True, 2),  # upsampled, split K
]


@pytest.mark.parametrize(("case", "tile", "splits", "fused", "upsample"), MATRIX_CASES,
                         ids=[str(i) for i in range(len(MATRIX_CASES))])
def test_matrix_conv_matches_torch_where_available(device: gpucore.Device, case: tuple,
                                                   tile: str, splits: int | None, fused: bool,
                                                   upsample: int) -> None:
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    c = _case(case, np.float16, seed=len(tile))
    up = lambda a: Tensor.from_numpy(a, device=device)  # noqa: E731
    x = up(c["x"])
    prologue = None
    y = _t(c["x"])
    if fused:
        prologue = group_norm_prologue(x, c["groups"], up(c["gamma"]), up(c["beta"]), 1e-5,
                                       silu=c["silu"])
        y = F.group_norm(y, c["groups"], _t(c["gamma"]), _t(c["beta"]), eps=1e-5)
        y = F.silu(y) if c["silu"] else y
    if upsample == 2:
        y = F.interpolate(y, scale_factor=2, mode="nearest")
    expected = F.conv2d(y, _t(c["weight"]), _t(c["bias"]), stride=c["stride"],
                        padding=c["padding"]).numpy()
    add = np.random.default_rng(1).standard_normal(expected.shape).astype(np.float16)
    stride, padding = (c["stride"],) * 2, (c["padding"],) * 2
    got = csm.conv2d_matrix(x, up(c["weight"]), up(c["bias"]), stride=stride, padding=padding,
                            dilation=(1, 1), out_hw=expected.shape[2:], add=up(add),
                            add_mode=1, tile=csm.CONV_TILES[tile], splits=splits,
                            prologue=prologue, upsample=upsample).numpy()
    assert relative_error(got, expected + add) < 2e-3
    if upsample == 2 and splits is None:  # the bounds-free kernel, upsampled
        assert csm.aligned(csm.CONV_TILES[tile], 64, expected[0, 0].size, 32 * 9)


def test_conv2d_routes_the_prologue_to_the_matrix_units_where_available(
        device: gpucore.Device, monkeypatch: pytest.MonkeyPatch) -> None:
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    calls = []

    def spy(*args: object, **kwargs: object) -> Tensor:
        calls.append(kwargs["prologue"])
        return _real_conv2d_matrix(*args, **kwargs)

    monkeypatch.setattr(csm, "conv2d_matrix", spy)
    monkeypatch.setattr(csm, "MIN_TILES", 0)
    c = _case(CASES[0], np.float16, seed=3)
    assert relative_error(_fused(device, c), _reference(c)) < 2e-3
    assert len(calls) == 1 and calls[0] is not None and calls[0].silu


def test_prologue_off_writes_the_norm_with_its_own_kernels(
        device: gpucore.Device, monkeypatch: pytest.MonkeyPatch) -> None:
    """FUSED off (the default): GroupNorm.prologue writes the norm out with GroupNorm's own
    kernels, so the conv's result is conv(group_norm(x, silu=True)) bit for bit; a prologue
    made for another tensor is refused."""
    from gpustd.nn import prologue as prologue_module

    monkeypatch.setattr(prologue_module, "FUSED", False)
    c = _case(CASES[0], np.float32, seed=9)
    norm = GroupNorm(c["groups"], c["x"].shape[1], device=device)
    norm.load_state_dict({"weight": c["gamma"], "bias": c["beta"]})
    conv = Conv2d(c["x"].shape[1], c["weight"].shape[0], 3, padding=1, device=device)
    conv.load_state_dict({"weight": c["weight"], "bias": c["bias"]})
    x = Tensor.from_numpy(c["x"], device=device)
    got = conv(x, prologue=norm.prologue(x, silu=True)).numpy()
    plain = conv(group_norm(x, c["groups"], norm.weight, norm.bias, norm.eps, silu=True))
    np.testing.assert_array_equal(got, plain.numpy())
    with pytest.raises(ValueError, match="another tensor"):
        conv(Tensor.from_numpy(c["x"], device=device), prologue=norm.prologue(x, silu=True))
