"""Runtime selection (wgpu-native vs Dawn) with fake runtimes: CI has no wgpudawn, and Dawn
does not start on lavapipe. The real Dawn adapter runs the whole suite on the GPU machine
(GPUCORE_RUNTIME=dawn)."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

import gpucore
from gpucore import _adapters, _runtime

pytestmark = pytest.mark.nodevice  # host logic: `pytest -m nodevice`


class FakeAdapter:
    def __init__(self, backend: str, kind: str, name: str, features: set[str]) -> None:
        self.info = {"backend_type": backend, "adapter_type": kind, "device": name,
                     "description": "fake driver"}
        self.features = set(features)
        self.limits = {"max-buffer-size": 1 << 30}
        self.requested: dict[str, Any] = {}

    def request_device_sync(self, **kwargs: Any) -> str:
        self.requested = kwargs
        return "device"


CONFIGS = [{"component_type": "f16", "result_component_type": "f32", "m": 16, "n": 16,
            "k": 16, "min_subgroup_size": 32, "max_subgroup_size": 32},
           {"component_type": "i8", "result_component_type": "i32", "m": 16, "n": 16,
            "k": 32, "min_subgroup_size": 32, "max_subgroup_size": 32}]


@pytest.fixture
def fake_runtimes(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """wgpu-native lists a GL and a Vulkan adapter; a fake wgpudawn lists one Vulkan GPU
    with subgroup matrices (Dawn's feature names)."""
    native = [FakeAdapter("OpenGL", "CPU", "llvmpipe", {"timestamp-query"}),
              FakeAdapter("Vulkan", "DiscreteGPU", "Fake GPU", {"shader-f16", "subgroup"})]
    dawn = FakeAdapter("Vulkan", "DiscreteGPU", "Fake GPU",
                       {"shader-f16", "subgroups", "chromium-experimental-subgroup-matrix"})
    calls: dict[str, Any] = {"toggles": None}

    def set_instance_extras(backends: Any, enable_toggles: Any, disable_toggles: Any) -> None:
        calls["toggles"] = list(enable_toggles)
        calls["off"] = list(disable_toggles)

    def enumerate_dawn() -> list[FakeAdapter]:
        calls["enumerations"] = calls.get("enumerations", 0) + 1
        return [dawn]

    extras = types.SimpleNamespace(
        all_toggles=lambda: {"allow_unsafe_apis": {}, "disable_robustness": {},
                             "timestamp_quantization": {}},
        set_instance_extras=set_instance_extras,
        get_adapter_properties=lambda a: {"subgroup_matrix_configs": CONFIGS})
    api = types.SimpleNamespace(gpu=types.SimpleNamespace(enumerate_adapters_sync=enumerate_dawn),
                                GPUError=RuntimeError)
    for name, module in (("wgpudawn", api), ("wgpudawn.backends", types.SimpleNamespace()),
                         ("wgpudawn.backends.dawn", types.SimpleNamespace(extras=extras)),
                         ("wgpudawn.backends.dawn.extras", extras)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(_adapters.wgpu.gpu, "enumerate_adapters_sync", lambda: native)
    monkeypatch.setattr(_runtime, "_loaded", {})
    for var in ("GPUCORE_RUNTIME", "GPUCORE_BACKEND", "GPUCORE_ADAPTER", "GPUCORE_DAWN_TOGGLES",
                "GPUCORE_ROBUST"):
        monkeypatch.delenv(var, raising=False)
    return {"native": native, "dawn": dawn, "calls": calls}


def test_dawn_requested_but_not_installed_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_runtime, "_loaded", {})
    monkeypatch.setattr(_runtime, "_import_dawn", lambda: None)
    for var in ("GPUCORE_BACKEND", "GPUCORE_ADAPTER"):
        monkeypatch.setenv(var, "")
    monkeypatch.setenv("GPUCORE_RUNTIME", "dawn")
    with pytest.raises(gpucore.GpuError, match=r"pip install avx-gpu\[dawn\]"):
        gpucore.Device.auto()
    monkeypatch.setenv("GPUCORE_RUNTIME", "vulkan")
    with pytest.raises(gpucore.GpuError, match="is not a runtime"):
        gpucore.devices()


def test_without_wgpudawn_only_wgpu_native_is_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_runtime, "_loaded", {})
    monkeypatch.setattr(_runtime, "_import_dawn", lambda: None)
    assert all(a.runtime == "wgpu" for a in gpucore.devices("all"))


def test_devices_lists_both_runtimes_with_stable_indices(fake_runtimes: dict[str, Any]) -> None:
    assert [a.runtime for a in gpucore.devices()] == ["wgpu", "wgpu"]  # the default runtime
    every = gpucore.devices("all")
    assert [(a.index, a.runtime) for a in every] == [(0, "wgpu"), (1, "wgpu"), (2, "dawn")]
    dawn = every[2]
    # Dawn's "subgroups" is gpucore's "subgroup"; subgroup matrices become a feature
    assert dawn.features == {"shader-f16", "subgroup", "subgroup-matrix"}
    assert dawn.label == "dawn-vulkan:2:Fake GPU"
    assert dawn.matrix_config("f16", "f32") is not None
    assert dawn.matrix_config("f16", "f16") is None
    assert str(dawn.matrix_configs[1]) == "i8->i32 16x16x32"
    assert not every[1].matrix_configs and "subgroup-matrix" not in every[1].features
    # the toggles went to Dawn once, those this build lacks left out; robustness off by default
    assert fake_runtimes["calls"]["toggles"] == ["allow_unsafe_apis", "disable_robustness"]
    assert _runtime.dawn_toggles() == ("allow_unsafe_apis", "disable_robustness")
    assert fake_runtimes["calls"]["off"] == ["timestamp_quantization"]


def test_runtime_selection(fake_runtimes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    assert _adapters.choose_adapter().runtime == "wgpu"
    assert _adapters.choose_adapter().backend == "vulkan"
    assert _adapters.choose_adapter(runtime="dawn").index == 2
    assert _adapters.choose_adapter(runtime="auto").index == 2  # it has the matrix units
    assert _adapters.choose_adapter(adapter=2).runtime == "dawn"  # an index names any runtime
    monkeypatch.setenv("GPUCORE_RUNTIME", "dawn")
    assert [a.index for a in gpucore.devices()] == [2]
    assert _adapters.choose_adapter().index == 2
    with pytest.raises(gpucore.NoAdapterError, match="no gl adapter"):
        _adapters.choose_adapter(backend="gl")
    fake_runtimes["dawn"].features.discard("chromium-experimental-subgroup-matrix")
    assert _adapters.choose_adapter(runtime="auto").runtime == "wgpu"  # no matrices: native


def test_dawn_device_request_uses_dawn_feature_names(fake_runtimes: dict[str, Any]) -> None:
    info = _adapters.choose_adapter(runtime="dawn")
    info.adapter.request_device_sync(label="x", required_features=["shader-f16", "subgroup"],
                                     required_limits={})
    asked = fake_runtimes["dawn"].requested
    assert asked["required_features"] == ["shader-f16", "subgroups",
                                          "chromium-experimental-subgroup-matrix"]
    assert asked["label"] == "x" and info.adapter.limits == {"max-buffer-size": 1 << 30}
    # Dawn "consumes" an adapter with its first device: a second one comes from a fresh list
    listed = fake_runtimes["calls"]["enumerations"]
    info.adapter.request_device_sync(required_features=[])
    assert fake_runtimes["calls"]["enumerations"] == listed + 1


def test_unknown_dawn_toggle_is_refused(fake_runtimes: dict[str, Any],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUCORE_DAWN_TOGGLES", "disable_robustness,no_such_toggle")
    with pytest.raises(gpucore.GpuError, match="no_such_toggle"):
        gpucore.devices("all")
    monkeypatch.setenv("GPUCORE_DAWN_TOGGLES", "skip_validation")
    with pytest.raises(gpucore.GpuError, match="aborts the process"):
        gpucore.devices("all")
    monkeypatch.setenv("GPUCORE_DAWN_TOGGLES", "disable_robustness")
    gpucore.devices("all")
    assert fake_runtimes["calls"]["toggles"] == ["allow_unsafe_apis", "disable_robustness"]


def test_gpucore_robust_keeps_dawns_bounds_checks(fake_runtimes: dict[str, Any],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUCORE_ROBUST", "1")
    gpucore.devices("all")
    assert fake_runtimes["calls"]["toggles"] == ["allow_unsafe_apis"]
    monkeypatch.setattr(_runtime, "_loaded", {})
    monkeypatch.setenv("GPUCORE_DAWN_TOGGLES", "disable_robustness")
    with pytest.raises(gpucore.GpuError, match="unset one of them"):
        gpucore.devices("all")
    monkeypatch.delenv("GPUCORE_DAWN_TOGGLES")
    monkeypatch.setenv("GPUCORE_ROBUST", "maybe")
    with pytest.raises(gpucore.GpuError, match="GPUCORE_ROBUST='maybe'"):
        gpucore.devices("all")
    monkeypatch.setenv("GPUCORE_ROBUST", "0")
    gpucore.devices("all")
    assert fake_runtimes["calls"]["toggles"] == ["allow_unsafe_apis", "disable_robustness"]


def test_tint_gets_enable_subgroups_and_naga_does_not() -> None:
    src = "// subgroupAdd( in a comment only\nfn f(x: f32) -> f32 { return subgroupAdd(x); }\n"
    assert _runtime.adapt_source("wgpu", src) == src
    dawn = _runtime.adapt_source("dawn", src)
    assert dawn.startswith("enable subgroups; ") and dawn.count("\n") == src.count("\n")
    assert _runtime.adapt_source("dawn", dawn) == dawn
    plain = "// subgroupAdd( in a comment only\nfn f(x: f32) -> f32 { return x; }\n"
    assert _runtime.adapt_source("dawn", plain) == plain
    builtin = "@compute @workgroup_size(32) fn main(@builtin(subgroup_invocation_id) i: u32) {}"
    assert _runtime.adapt_source("dawn", builtin).startswith("enable subgroups;")


def test_dawn_lists_every_gpu_of_a_machine(fake_runtimes: dict[str, Any],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Two identical GPUs: wgpudawn's enumerate_adapters_sync() merges them into one, Dawn's
    own enumeration lists both (and its Null and OpenGLES adapters, which are left out); each
    Dawn device then opens on its own GPU."""
    features = {"shader-f16", "subgroups", "chromium-experimental-subgroup-matrix"}
    first = FakeAdapter("Vulkan", "DiscreteGPU", "NVIDIA H100", features)
    second = FakeAdapter("Vulkan", "DiscreteGPU", "NVIDIA H100", features)
    native = [FakeAdapter("OpenGLES", "DiscreteGPU", "NVIDIA H100", set()), first,
              FakeAdapter("Null", "CPU", "Null", set()), second]
    gpu = sys.modules["wgpudawn"].gpu
    monkeypatch.setattr(gpu, "enumerate_adapters_sync", lambda: [first], raising=False)
    monkeypatch.setattr(gpu, "_enumerate_all_adapters", lambda: native, raising=False)
    dawn = gpucore.devices("dawn")
    assert [(a.index, a.label) for a in dawn] == [(2, "dawn-vulkan:2:NVIDIA H100"),
                                                  (3, "dawn-vulkan:3:NVIDIA H100")]
    dawn[1].adapter.request_device_sync(required_features=[])
    assert second.requested and not first.requested
    dawn[1].adapter.request_device_sync(required_features=[])  # a fresh adapter: the same GPU
    assert not first.requested


def test_device_lists_mix_runtimes(fake_runtimes: dict[str, Any]) -> None:
    """`dawn:0,wgpu:1` names GPUs of two runtimes for one queue; a bare index names an adapter
    of any runtime, whatever GPUCORE_RUNTIME says (indices are stable across runtimes)."""
    chosen = gpucore.select_adapters("dawn:0,wgpu:1")
    assert [(a.runtime, a.index) for a in chosen] == [("dawn", 2), ("wgpu", 1)]
    assert [a.index for a in gpucore.select_adapters("2,0")] == [2, 0]
    assert [a.index for a in gpucore.select_adapters("wgpu:1,1", repeats=True)] == [1, 1]
    with pytest.raises(ValueError, match="named twice"):
        gpucore.select_adapters("wgpu:1,1")
    with pytest.raises(gpucore.NoAdapterError, match=r"dawn:3: dawn lists 1 adapter\(s\); "
                                                     "present: gl:0:llvmpipe"):
        gpucore.select_adapters("dawn:3")
    with pytest.raises(gpucore.NoAdapterError, match="no adapter with index 7"):
        gpucore.select_adapters("7")
    assert [a.runtime for a in gpucore.select_adapters("all")] == ["wgpu"]  # the runtime in effect
