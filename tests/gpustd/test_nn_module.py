"""gpustd.nn.Module: state-dict names equal torch's, loading, and its error reports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import assert_close, random_array

import gpucore
from gpustd import Tensor, nn


class Ours(nn.Module):
    def __init__(self, device: gpucore.Device, dtype=np.float32) -> None:
        kw = dict(device=device, dtype=dtype)
        self.norm = nn.GroupNorm(2, 4, eps=1e-6, **kw)
        self.conv = nn.Conv2d(4, 6, 3, padding=1, **kw)
        self.layers = nn.ModuleList([nn.Linear(6, 5, **kw), nn.Identity(),
                                     nn.Linear(5, 3, bias=False, **kw)])
        self.blocks = [nn.LayerNorm(6, **kw)]  # a plain list works like a ModuleList
        self.emb = nn.Embedding(10, 6, **kw)
        self.ff = nn.GEGLU(6, 4, **kw)
        self.scale = 0.5  # non-parameter attributes are ignored


def _torch_twin() -> torch.nn.Module:
    m = torch.nn.Module()
    m.norm = torch.nn.GroupNorm(2, 4, eps=1e-6)
    m.conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    m.layers = torch.nn.ModuleList([torch.nn.Linear(6, 5), torch.nn.Identity(),
                                    torch.nn.Linear(5, 3, bias=False)])
    m.blocks = torch.nn.ModuleList([torch.nn.LayerNorm(6)])
    m.emb = torch.nn.Embedding(10, 6)
    m.ff = torch.nn.Module()
    m.ff.proj = torch.nn.Linear(6, 8)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.rand_like(p) * 2 - 1)
    return m.double()


def _state(twin: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.numpy().astype(np.float32) for k, v in twin.state_dict().items()}


def test_names_and_shapes_equal_torch(device: gpucore.Device) -> None:
    ours, twin = Ours(device), _torch_twin()
    assert [(k, t.shape) for k, t in ours.named_parameters()] == \
        [(k, tuple(v.shape)) for k, v in twin.state_dict().items()]


def test_loaded_layers_match_torch(device: gpucore.Device) -> None:
    ours, twin = Ours(device), _torch_twin()
    state = _state(twin)
    ours.load_state_dict(state)
    assert all(np.array_equal(ours.state_dict()[k], v) for k, v in state.items())
    rng = np.random.default_rng(0)
    x = random_array(rng, (2, 4, 5, 5))
    tx = torch.from_numpy(x).double()
    up = Tensor.from_numpy(x, device=device)
    with torch.no_grad():
        h = twin.conv(torch.nn.functional.silu(twin.norm(tx)))
        assert_close(ours.conv(ours.norm(up, silu=True)).numpy(), h.numpy(), tol=1e-4)
        tokens = random_array(rng, (3, 6))
        tt = torch.from_numpy(tokens).double()
        t = Tensor.from_numpy(tokens, device=device)
        ref = twin.layers[2](twin.layers[1](twin.layers[0](twin.blocks[0](tt))))
        got = ours.layers[2](ours.layers[1](ours.layers[0](ours.blocks[0](t))))
        assert_close(got.numpy(), ref.numpy(), tol=1e-4)
        value, gate = twin.ff.proj(tt).chunk(2, dim=-1)
        assert_close(ours.ff(t).numpy(), (value * torch.nn.functional.gelu(gate)).numpy(),
                     tol=1e-4)
        ids = np.array([[3, 9, 0]])
        assert_close(ours.emb(ids).numpy(), twin.emb(torch.from_numpy(ids)).numpy())


def test_load_converts_to_float16(f16_device: gpucore.Device) -> None:
    ours, twin = Ours(f16_device), _torch_twin()
    ours.load_state_dict(_state(twin), dtype=np.float16)
    assert {t.dtype for t in ours.parameters()} == {np.dtype(np.float16)}
    native = Ours(f16_device, dtype=np.float16)
    native.load_state_dict(_state(twin))  # float32 arrays into float16 parameters
    x = random_array(np.random.default_rng(1), (3, 6), np.float16)
    ref = twin.layers[0](torch.from_numpy(x).double()).detach().numpy()
    for m in (ours, native):
        assert_close(m.layers[0](Tensor.from_numpy(x, device=f16_device)).numpy(), ref,
                     dtype=np.float16)


def test_load_reports_every_problem_at_once(device: gpucore.Device) -> None:
    ours = Ours(device)
    state = _state(_torch_twin())
    before = ours.state_dict()["conv.bias"].copy()
    state["conv.bias"] = np.zeros(6, np.float32) + 7
    del state["norm.weight"], state["layers.0.bias"]
    state["extra.weight"] = np.zeros(2, np.float32)
    state["conv.weight"] = np.zeros((6, 4, 1, 1), np.float32)
    state["emb.weight"] = np.zeros((11, 6), np.float32)
    with pytest.raises(nn.StateDictError) as info:
        ours.load_state_dict(state)
    message = str(info.value)
    for part in ("missing keys (2): norm.weight, layers.0.bias", "unexpected keys (1): extra",
                 "conv.weight: expected (6, 4, 3, 3), got (6, 4, 1, 1)",
                 "emb.weight: expected (10, 6), got (11, 6)"):
        assert part in message
    np.testing.assert_array_equal(ours.state_dict()["conv.bias"], before)  # nothing written
    with pytest.raises(nn.StateDictError, match="shape mismatches") as info:
        ours.load_state_dict(state, strict=False)  # a wrong shape is never tolerated
    assert "missing keys" not in str(info.value)
    del state["conv.weight"], state["emb.weight"]
    ours.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(ours.state_dict()["conv.bias"], np.full(6, 7, np.float32))


def test_module_basics(device: gpucore.Device) -> None:
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(1)
    with pytest.raises(TypeError, match="Modules"):
        nn.ModuleList([nn.Identity(), 3])
    with pytest.raises(ValueError, match="divisible"):
        nn.Conv2d(4, 6, 3, groups=4, device=device)
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(3, 4, device=device)
    weight = nn.Linear(3, 2, device=device).weight
    assert weight.buffer.read_only  # kernels may never write a parameter
    assert [k for k, _ in nn.Linear(3, 2, bias=False, device=device).named_parameters()] == \
        ["weight"]
