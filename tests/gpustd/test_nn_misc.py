"""gpustd.nn activations, linear, spatial ops and lookups against torch CPU / diffusers."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from support import assert_close, random_array

import gpucore
import gpustd
import gpustd.gemm.matrix_units
from gpustd import Tensor, nn

get_timestep_embedding = pytest.importorskip("diffusers.models.embeddings").get_timestep_embedding


def _up(device, a):
    return Tensor.from_numpy(a, device=device)


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, np.float64))


ACTIVATIONS = {
    "silu": (nn.silu, F.silu),
    "gelu": (nn.gelu, F.gelu),
    "gelu_tanh": (lambda x: nn.gelu(x, approximate="tanh"),
                  lambda x: F.gelu(x, approximate="tanh")),
    "quick_gelu": (nn.quick_gelu, lambda x: x * torch.sigmoid(1.702 * x)),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("scale", [1.0, 30.0])  # 30: exp/tanh saturate without NaN
def test_activations(device: gpucore.Device, name: str, scale: float) -> None:
    ours, ref = ACTIVATIONS[name]
    x = random_array(np.random.default_rng(1), (3, 5, 67), np.float32, -scale, scale)
    assert_close(ours(_up(device, x)).numpy(), ref(_t(x)).numpy())


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_geglu_matches_diffusers_order(device: gpucore.Device, approximate: str) -> None:
    x = random_array(np.random.default_rng(2), (2, 9, 2 * 41), np.float32, -3, 3)
    hidden, gate = _t(x).chunk(2, dim=-1)  # diffusers GEGLU.forward
    out = nn.geglu(_up(device, x), approximate=approximate)
    assert out.shape == (2, 9, 41)
    assert_close(out.numpy(), (hidden * F.gelu(gate, approximate=approximate)).numpy())


def test_activations_float16(f16_device: gpucore.Device) -> None:
    x = random_array(np.random.default_rng(3), (4, 130), np.float16, -4, 4)
    for name in ACTIVATIONS:
        ours, ref = ACTIVATIONS[name]
        assert_close(ours(_up(f16_device, x)).numpy(), ref(_t(x)).numpy(), dtype=np.float16)
    assert_close(nn.geglu(_up(f16_device, x)).numpy(),
                 (_t(x[:, :65]) * F.gelu(_t(x[:, 65:]))).numpy(), dtype=np.float16)


def test_activation_errors(device: gpucore.Device) -> None:
    x = _up(device, np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="even"):
        nn.geglu(x)
    with pytest.raises(ValueError, match="approximate"):
        nn.gelu(x, approximate="fast")
    with pytest.raises(TypeError, match="gpustd Tensor"):
        nn.silu(np.ones(3, np.float32))


@pytest.mark.parametrize("x_shape,w_shape,bias", [
    ((2, 77, 768), (320, 768), True),  # cross-attention key projection
    ((5, 37), (19, 37), False),
    ((1, 1), (1, 1), True),
])
def test_linear(device: gpucore.Device, x_shape, w_shape, bias: bool) -> None:
    rng = np.random.default_rng(4)
    x, w = random_array(rng, x_shape), random_array(rng, w_shape)
    b = random_array(rng, (w_shape[0],)) if bias else None
    out = nn.linear(_up(device, x), _up(device, w), None if b is None else _up(device, b))
    ref = F.linear(_t(x), _t(w), None if b is None else _t(b))
    assert_close(out.numpy(), ref.numpy(), tol=1e-4)


@pytest.mark.parametrize("x_shape,w_shape", [((2, 37, 24), (19, 24)), ((3, 200), (330, 200))])
def test_linear_add_to(device: gpucore.Device, x_shape, w_shape) -> None:
    """add_to= adds the product into a residual in place (split-K for the tiny-M case)."""
    from gpustd.gemm import plan as gemm_plan

    assert gemm_plan.plan_gemm(3, 330, 200, 1).splits > 1
    rng = np.random.default_rng(6)
    x, w, b = random_array(rng, x_shape), random_array(rng, w_shape), random_array(
        rng, (w_shape[0],))
    res = random_array(rng, (*x_shape[:-1], w_shape[0]))
    acc = _up(device, res)
    got = nn.linear(_up(device, x), _up(device, w), _up(device, b), add_to=acc)
    assert got is acc
    assert_close(acc.numpy(), (F.linear(_t(x), _t(w), _t(b)) + _t(res)).numpy(), tol=1e-4)
    with pytest.raises(ValueError, match="add_to must have"):
        nn.linear(_up(device, x), _up(device, w), add_to=_up(device, res[..., :3]))


# The second case is split-K (the row bias then moves to the finishing pass).
@pytest.mark.parametrize("n,c_in,c_out,h,w", [(2, 24, 19, 5, 7), (1, 96, 40, 2, 3)])
def test_conv1x1_token_layouts(device: gpucore.Device, n, c_in, c_out, h, w) -> None:
    """NCHW -> tokens and tokens -> NCHW 1x1 convs (no permute) against torch."""
    from gpustd.gemm import plan as gemm_plan
    from gpustd.nn.linear import conv1x1_tokens, tokens_conv1x1

    assert gemm_plan.plan_gemm(40, 6, 96, 1).splits > 1
    rng = np.random.default_rng(7)
    x, wt = random_array(rng, (n, c_in, h, w)), random_array(rng, (c_out, c_in, 1, 1))
    b = random_array(rng, (c_out,))
    tokens = conv1x1_tokens(_up(device, x), _up(device, wt), _up(device, b))
    ref = F.conv2d(_t(x), _t(wt), _t(b)).flatten(2).transpose(1, 2)
    assert_close(tokens.numpy(), ref.numpy(), tol=1e-4)
    t = random_array(rng, (n, h * w, c_in))
    w2 = random_array(rng, (c_out, c_in))
    image = tokens_conv1x1(_up(device, t), _up(device, w2), _up(device, b), h, w)
    ref = F.linear(_t(t), _t(w2), _t(b)).transpose(1, 2).reshape(n, c_out, h, w)
    assert_close(image.numpy(), ref.numpy(), tol=1e-4)
    residual = random_array(rng, (n, c_out, h, w))
    acc = _up(device, residual)
    assert tokens_conv1x1(_up(device, t), _up(device, w2), _up(device, b), h, w,
                          add_to=acc) is acc
    assert_close(acc.numpy(), ref.numpy() + residual, tol=1e-4)
    with pytest.raises(ValueError, match="height"):
        tokens_conv1x1(_up(device, t), _up(device, w2), None, h + 1, w)
    with pytest.raises(ValueError, match="add_to must have"):
        tokens_conv1x1(_up(device, t), _up(device, w2), None, h, w, add_to=_up(device, t))


@pytest.mark.parametrize("x_shape,d,approximate", [
    ((2, 37, 24), 19, "none"),  # d not a multiple of 4, vec4 loads
    ((5, 30), 70, "tanh"),  # K not a multiple of 4: scalar loads; two column tiles
    ((130, 40), 33, "none"),  # two row tiles
])
def test_linear_geglu(device: gpucore.Device, x_shape, d, approximate) -> None:
    """GEGLU with its gate in the GEMM epilogue against diffusers' order in torch."""
    from gpustd.nn.linear import linear_geglu

    rng = np.random.default_rng(8)
    x, w = random_array(rng, x_shape), random_array(rng, (2 * d, x_shape[-1]))
    b = random_array(rng, (2 * d,))
    got = linear_geglu(_up(device, x), _up(device, w), _up(device, b), approximate=approximate)
    value, gate = F.linear(_t(x), _t(w), _t(b)).chunk(2, -1)
    assert_close(got.numpy(), (value * F.gelu(gate, approximate=approximate)).numpy())
    nobias = linear_geglu(_up(device, x), _up(device, w), approximate=approximate)
    value, gate = F.linear(_t(x), _t(w)).chunk(2, -1)
    assert_close(nobias.numpy(), (value * F.gelu(gate, approximate=approximate)).numpy())
    with pytest.raises(ValueError, match="even"):
        linear_geglu(_up(device, x), _up(device, w[1:]))


def test_linear_geglu_on_a_cpu_is_the_direct_gemm_and_the_gate(first_device: gpucore.Device,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """On a CPU adapter GEGLU is the direct GEMM (gpustd/gemm/cpu.py) and the gate as a pass
    (gemm.wgsl's fused gate runs its GPU tiles there): no portable GEMM kernel, the fused
    kernel's result within float32's rounding: ragged rows and columns, a bias."""
    from gpustd.gemm import portable
    from gpustd.nn.linear import linear_geglu

    device = first_device
    if device.info.type != "cpu":
        pytest.skip(f"{device.info.label} is a GPU: the fused gate applies")
    rng = np.random.default_rng(9)
    x, w, b = random_array(rng, (70, 24)), random_array(rng, (80, 24)), random_array(rng, (80,))
    rows: list[int] = []
    built = portable.gemm_kernel
    monkeypatch.setattr(portable, "gemm_kernel", lambda dtype, tile, **kw: (
        rows.append(tile.tm), built(dtype, tile, **kw))[1])
    on_cpu = linear_geglu(_up(device, x), _up(device, w), _up(device, b)).numpy()
    monkeypatch.setattr(device, "info", dataclasses.replace(device.info, type="discrete"))
    on_gpu = linear_geglu(_up(device, x), _up(device, w), _up(device, b)).numpy()
    assert rows == [8]  # the fused kernel only where the adapter is a GPU
    assert_close(on_cpu, on_gpu.astype(np.float64), tol=1e-5)
    assert np.abs(on_cpu).max() > 1


def test_linear_float16_and_errors(device: gpucore.Device) -> None:
    x, w = np.ones((3, 4), np.float32), np.ones((5, 4), np.float32)
    with pytest.raises(ValueError, match="features"):
        nn.linear(_up(device, x), _up(device, np.ones((5, 3), np.float32)))
    with pytest.raises(ValueError, match="bias"):
        nn.linear(_up(device, x), _up(device, w), _up(device, np.ones(4, np.float32)))
    if device.has_f16:
        rng = np.random.default_rng(5)
        xh, wh = random_array(rng, (7, 64), np.float16), random_array(rng, (9, 64), np.float16)
        assert_close(nn.linear(_up(device, xh), _up(device, wh)).numpy(),
                     F.linear(_t(xh), _t(wh)).numpy(), dtype=np.float16)


@pytest.mark.parametrize("parts", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_linears_and_layers_each(device: gpucore.Device, dtype, parts: bool,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """linears: one input through several weights and their biases (one GEMM on the matrix
    units, with linear.PARTS; emulated ones on CI's lavapipe) against torch; Linear.each
    groups plain layers of one weight shape, all with biases or none, and gives each
    layer's own result bit for bit."""
    from conftest import emulated_tiles, matrix_device
    module = importlib.import_module("gpustd.nn.linear")  # gpustd.nn.linear is the function
    if dtype == np.float16 and not device.has_f16:
        pytest.skip(f"{device.info.label} has no shader-f16")
    if dtype == np.float16 and parts:
        device = matrix_device(device)  # emulated: its parts kernel 32 x 32 (13 -> 6 s of CI)
        emulated_tiles(monkeypatch, device, (gpustd.gemm.matrix_units, "record_gemm_parts"))
    monkeypatch.setattr(module, "PARTS", parts)
    taken = []  # the parts GEMM's answers, biased or not
    record = module.record_gemm_parts
    monkeypatch.setattr(module, "record_gemm_parts", lambda *a, **kw: taken.append(
        (kw["bias"] is not None, record(*a, **kw))) or taken[-1][1])
    rng = np.random.default_rng(9)
    x = random_array(rng, (2, 75, 40), dtype)
    ws = [random_array(rng, (24, 40), dtype) for _ in range(3)]
    bs = [random_array(rng, (24,), dtype) for _ in range(2)]
    outs = nn.linears(_up(device, x), [_up(device, w) for w in ws[:2]],
                      [_up(device, b) for b in bs])
    for out, w, b in zip(outs, ws, bs):
        assert out.shape == (2, 75, 24)
        assert_close(out.numpy(), F.linear(_t(x), _t(w), _t(b)).numpy(), dtype=dtype)
    # two with biases (together), one without (alone), one of another shape (alone)
    layers = [nn.Linear(40, 24, dtype=dtype, device=device) for _ in bs]
    layers += [nn.Linear(40, 24, bias=False, dtype=dtype, device=device),
               nn.Linear(40, 16, dtype=dtype, device=device)]
    for layer, w, b in zip(layers, [*ws, ws[0][:16]], [*bs, None, bs[0][:16]]):
        layer.load_state_dict({"weight": w, **({} if b is None else {"bias": b})})
    together = nn.Linear.each(_up(device, x), layers)
    for layer, got in zip(layers, together):
        np.testing.assert_array_equal(got.numpy(), layer(_up(device, x)).numpy())
    # a capture replays the biases' copies: a bias written in place since (a LoRA's) is seen
    step = gpustd.capture(lambda t: nn.Linear.each(t, layers[:2]))
    step(_up(device, x))
    layers[1].bias.buffer.write(bs[0])  # type: ignore[union-attr]
    for layer, got in zip(layers, step(_up(device, x))):
        np.testing.assert_array_equal(got.numpy(), layer(_up(device, x)).numpy())
    matrix = dtype == np.float16 and parts and gpustd.gemm.matrix_units.available(device)
    assert taken == ([(True, True)] * 3 if matrix else [])
    with pytest.raises(ValueError, match="features"):
        nn.linears(_up(device, x), [_up(device, ws[0]), _up(device, ws[1][:, :30])])
    with pytest.raises(ValueError, match="biases"):
        nn.linears(_up(device, x), [_up(device, ws[0])], [])


@settings(max_examples=10, deadline=None)
@given(lead=st.lists(st.integers(1, 4), min_size=0, max_size=2), h=st.integers(1, 9),
       w=st.integers(1, 9))
def test_upsample_nearest2x(device: gpucore.Device, lead, h, w) -> None:
    x = random_array(np.random.default_rng(h * w), (*lead, h, w))
    ref = np.repeat(np.repeat(x, 2, axis=-2), 2, axis=-1)
    np.testing.assert_array_equal(nn.upsample_nearest2x(_up(device, x)).numpy(), ref)
    if len(lead) == 2:
        torch_ref = F.interpolate(torch.from_numpy(x), scale_factor=2, mode="nearest")
        np.testing.assert_array_equal(ref, torch_ref.numpy())


@pytest.mark.parametrize("axis", [1, 0, -1, 2])
def test_concat(device: gpucore.Device, axis: int) -> None:
    rng = np.random.default_rng(6)
    shapes = [[2, 3, 5, 4], [2, 3, 5, 4], [2, 3, 5, 4]]
    for i, n in enumerate((3, 1, 7)):
        shapes[i][axis] = n
    parts = [random_array(rng, s) for s in shapes]
    out = nn.concat([_up(device, p) for p in parts], axis=axis)
    np.testing.assert_array_equal(out.numpy(), np.concatenate(parts, axis=axis))


def test_concat_float16_and_errors(device: gpucore.Device) -> None:
    a = _up(device, np.ones((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="outside axis"):
        nn.concat([a, _up(device, np.ones((2, 3, 5), np.float32))], axis=1)
    with pytest.raises(ValueError, match="out of range"):
        nn.concat([a, a], axis=3)
    with pytest.raises(ValueError, match="at least one"):
        nn.concat([])
    if device.has_f16:
        h = random_array(np.random.default_rng(7), (2, 3, 5), np.float16)
        with pytest.raises(TypeError, match="convert"):
            nn.concat([a, _up(device, h)])
        out = nn.concat([_up(device, h), _up(device, h[:, :1])], axis=1)
        np.testing.assert_array_equal(out.numpy(), np.concatenate([h, h[:, :1]], axis=1))


@pytest.mark.parametrize("padding,value", [
    ((0, 1, 0, 1), 0.0),  # SD's asymmetric downsampling pad
    ((2, 3, 1, 0), -1.5),
    ((1, -2, -1, 2), 0.0),  # negative amounts crop, as in F.pad
    ((3, 1), 2.0),  # last dimension only
])
def test_pad(device: gpucore.Device, padding, value: float) -> None:
    x = random_array(np.random.default_rng(8), (2, 3, 5, 7))
    out = nn.pad(_up(device, x), padding, value=value)
    np.testing.assert_array_equal(out.numpy(),
                                  F.pad(torch.from_numpy(x), padding, value=value).numpy())


def test_pad_errors(device: gpucore.Device) -> None:
    x = _up(device, np.ones((1, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="left, right"):
        nn.pad(x, (1, 1, 1))
    with pytest.raises(ValueError, match="crops more"):
        nn.pad(x, (0, 0, -2, -2))


@pytest.mark.parametrize("mode,padding,too_far,says", [
    ("reflect", (3, 3, 3, 3), (0, 0, 5, 0), "size - 1"),
    ("reflect", (1, 0, 2, 4), (0, 0, 5, 0), "size - 1"),
    ("reflect", (0, 6, 0, 0), (0, 0, 5, 0), "size - 1"),
    ("circular", (1, 1, 1, 1), (0, 8, 0, 0), r"0\.\.size on each side"),
    ("circular", (2, 0, 5, 3), (0, 8, 0, 0), r"0\.\.size on each side"),
    ("circular", (7, 7, 0, 0), (0, 8, 0, 0), r"0\.\.size on each side"),
    ("replicate", (1, 1, 1, 1), (0, 0, -1, 0), ">= 0 on each side"),
    ("replicate", (9, 0, 2, 6), (1, -1, 0, 0), ">= 0 on each side")])
def test_reflect_circular_and_replicate_pad(device: gpucore.Device, mode: str, padding, too_far,
                                  says: str) -> None:
    x = random_array(np.random.default_rng(9), (2, 3, 5, 7))
    out = nn.pad(_up(device, x), padding, mode=mode)
    np.testing.assert_array_equal(out.numpy(),
                                  F.pad(torch.from_numpy(x), padding, mode=mode).numpy())
    with pytest.raises(ValueError, match=says):
        nn.pad(_up(device, x), too_far, mode=mode)


@pytest.mark.parametrize("kernel,stride,padding,upsample,prologue", [
    (3, 1, 1, 1, False), (3, 2, 1, 1, False), (3, 1, 1, 2, False), (5, 1, 2, 1, True),
    (3, 1, 1, 1, True), (1, 1, 0, 1, False)])
def test_conv2d_pads_circularly_inside_padding_mode(device: gpucore.Device, kernel: int,
                                                    stride: int, padding: int, upsample: int,
                                                    prologue: bool) -> None:
    """torch's padding_mode="circular" (the WebUI's Tiling), with a GroupNorm + SiLU read as
    the conv's prologue and its 2x upsampled read; zeros outside the block."""
    rng = np.random.default_rng(12)
    x = random_array(rng, (2, 4, 9, 7))
    conv = nn.Conv2d(4, 6, kernel, stride=stride, padding=padding, device=device)
    w, b = random_array(rng, (6, 4, kernel, kernel)), random_array(rng, (6,))
    conv.load_state_dict({"weight": w, "bias": b})
    norm = nn.GroupNorm(2, 4, device=device)
    gamma, beta = 1 + 0.1 * random_array(rng, (4,)), random_array(rng, (4,))
    norm.load_state_dict({"weight": gamma, "bias": beta})
    ref = torch.nn.Conv2d(4, 6, kernel, stride=stride, padding=padding, padding_mode="circular")
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(w)), ref.bias.copy_(torch.from_numpy(b))
        xt = torch.from_numpy(x)
        if prologue:
            xt = F.silu(F.group_norm(xt, 2, torch.from_numpy(gamma), torch.from_numpy(beta)))
        if upsample == 2:
            xt = F.interpolate(xt, scale_factor=2, mode="nearest")
        expected = ref(xt).numpy()
    x_up = _up(device, x)
    with nn.padding_mode("circular"):
        got = conv(x_up, upsample=upsample,
                   prologue=norm.prologue(x_up, silu=True) if prologue else None).numpy()
    assert_close(got, expected)
    zeros = conv(x_up, upsample=upsample,
                 prologue=norm.prologue(x_up, silu=True) if prologue else None).numpy()
    assert padding == 0 or np.abs(zeros - expected).max() > 0.1  # the mode is the block's
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        with nn.padding_mode("reflect"):
            pass


@pytest.mark.parametrize("shape,size", [((2, 3, 7, 9), 2), ((1, 4, 5), 3), ((6, 6), 2)])
def test_max_pool2d(device: gpucore.Device, shape, size: int) -> None:
    x = random_array(np.random.default_rng(10), shape)
    ref = F.max_pool2d(torch.from_numpy(x)[(None,) * (4 - len(shape))], size)
    np.testing.assert_array_equal(nn.max_pool2d(_up(device, x), size).numpy(),
                                  ref.reshape(*shape[:-2], *ref.shape[-2:]).numpy())


@pytest.mark.parametrize("stride,padding,output_padding,kernel", [
    (2, 1, 1, (3, 3)),  # the upsampling of pix2pix-style generators: exactly 2x
    (2, 0, 0, (3, 3)),
    (3, (2, 1), (1, 2), (3, 4)),
    (1, 1, 0, (3, 3)),
])
def test_conv_transpose2d(device: gpucore.Device, stride, padding, output_padding,
                          kernel) -> None:
    rng = np.random.default_rng(11)
    x, w = random_array(rng, (2, 5, 7, 9)), random_array(rng, (5, 4, *kernel))
    b = random_array(rng, (4,))
    ref = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                             stride=stride, padding=padding, output_padding=output_padding)
    got = nn.conv_transpose2d(_up(device, x), _up(device, w), _up(device, b), stride=stride,
                              padding=padding, output_padding=output_padding)
    assert_close(got.numpy(), ref.numpy(), tol=1e-5)
    with pytest.raises(ValueError, match="output_padding"):
        nn.conv_transpose2d(_up(device, x), _up(device, w), stride=2, output_padding=2)


@pytest.mark.parametrize("dim,flip,shift,scale", [
    (320, True, 0, 1),  # SD 1.5 UNet time_proj
    (256, False, 1, 1),  # diffusers' defaults
    (33, False, 1, 1),  # odd dim: zero pad column
    (64, True, 1, 0.5),
])
def test_timestep_embedding_matches_diffusers(device: gpucore.Device, dim, flip, shift,
                                              scale) -> None:
    steps = np.array([999, 0, 501.5, 1, 250], np.float32)
    ours = nn.timestep_embedding(steps, dim, flip, shift, scale, device=device)
    ref = get_timestep_embedding(torch.from_numpy(steps), dim, flip, shift, scale)
    # diffusers' own float32 frequencies differ from exact ones by an ulp here and there,
    # which at t ~ 1000 moves the argument by up to 6e-5 rad.
    assert_close(ours.numpy(), ref.numpy(), tol=2e-4)
    again = nn.timestep_embedding(_up(device, steps), dim, flip, shift, scale)
    np.testing.assert_array_equal(again.numpy(), ours.numpy())


def test_timestep_embedding_errors(device: gpucore.Device) -> None:
    with pytest.raises(TypeError, match="float32"):
        nn.timestep_embedding(_up(device, np.array([1, 2], np.int32)), 8)
    with pytest.raises(ValueError, match="1-D"):
        nn.timestep_embedding(_up(device, np.ones((2, 2), np.float32)), 8)
    with pytest.raises(ValueError, match="divides by zero"):
        nn.timestep_embedding([1.0], 2, downscale_freq_shift=1, device=device)


def test_embedding(device: gpucore.Device) -> None:
    rng = np.random.default_rng(9)
    table = random_array(rng, (49, 12))
    ids = rng.integers(0, 49, size=(2, 77))
    ours = nn.embedding(ids, _up(device, table))
    np.testing.assert_array_equal(ours.numpy(), table[ids])
    on_gpu = nn.embedding(_up(device, ids.astype(np.int32)), _up(device, table))
    np.testing.assert_array_equal(on_gpu.numpy(), table[ids])
    with pytest.raises(ValueError, match=r"\[0, 49\)"):
        nn.embedding(np.array([0, 49]), _up(device, table))
    with pytest.raises(TypeError, match="int32"):
        nn.embedding(_up(device, np.array([0.0], np.float32)), _up(device, table))


def test_embedding_of_a_table_past_one_binding(device: gpucore.Device,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A table larger than one storage binding (SD's CLIP table on a 128 MiB adapter) is read
    row by row with buffer copies: the same rows, zeros for a GPU id outside the table."""
    rng = np.random.default_rng(10)
    table = random_array(rng, (49, 12))
    ids = rng.integers(0, 49, size=(3, 7))
    up = _up(device, table)
    monkeypatch.setitem(device.limits, "max-storage-buffer-binding-size", 1024)
    np.testing.assert_array_equal(nn.embedding(ids, up).numpy(), table[ids])
    outside = ids.astype(np.int32)
    outside[1, 2] = 60
    want = table[np.minimum(outside, 48)]
    want[1, 2] = 0
    np.testing.assert_array_equal(nn.embedding(_up(device, outside), up).numpy(), want)
    if device.has_f16:
        odd = _up(device, random_array(rng, (300, 3)).astype(np.float16))
        with pytest.raises(ValueError, match="no whole words"):
            nn.embedding([1], odd)
