"""gpucore._build_devices: a Dawn device's background builds shared with extra devices that
only compile (their own build threads), on stand-ins for Dawn's objects: which builds go where,
that the using device always builds the pipeline it dispatches, and that every failure falls
back to the device's own build."""

from __future__ import annotations

from typing import Any

import pytest

from gpucore import _build_devices

pytestmark = pytest.mark.nodevice

DESCRIPTOR = {"label": "k:main", "layout": "own layout",
              "compute": {"module": "own module", "entry_point": "main",
                          "constants": {"scale": 2.0}}}
ENTRIES = [{"binding": 0, "visibility": 4, "buffer": {"type": "storage"}}]


class _Promise:
    def __init__(self, error: bool) -> None:
        self.error = error
        self.waited = False

    def sync_wait(self) -> str:
        self.waited = True
        if self.error:
            raise RuntimeError("create_compute_pipeline failed (3): bad")
        return "helper pipeline"


class _Wgpu:
    """A Dawn device's stand-in: what it was asked to create."""

    def __init__(self, name: str, *, fail_async: bool = False) -> None:
        self.name = name
        self.fail_async = fail_async
        self.calls: list[tuple[str, Any]] = []
        self.promises: list[_Promise] = []
        self.destroyed = False

    def destroy(self) -> None:
        self.destroyed = True

    def create_bind_group_layout(self, *, entries: list) -> str:
        self.calls.append(("layout", entries))
        return f"{self.name} bgl"

    def create_pipeline_layout(self, *, bind_group_layouts: list) -> str:
        return f"{self.name} pipeline layout of {bind_group_layouts[0]}"

    def create_shader_module(self, *, label: str, code: str) -> str:
        self.calls.append(("module", code))
        return f"{self.name} module"

    def create_compute_pipeline_async(self, **descriptor: Any) -> _Promise:
        self.calls.append(("async", descriptor))
        self.promises.append(_Promise(self.fail_async))
        return self.promises[-1]

    def create_compute_pipeline(self, **descriptor: Any) -> str:
        self.calls.append(("build", descriptor))
        return f"{self.name} pipeline"


class _Adapter:
    def __init__(self, *, refuse: bool = False, fail_async: bool = False) -> None:
        self.refuse = refuse
        self.fail_async = fail_async
        self.opened: list[_Wgpu] = []
        self.requests: list[dict] = []

    def request_device_sync(self, **kwargs: Any) -> _Wgpu:
        self.requests.append(kwargs)
        if self.refuse:
            raise RuntimeError("out of memory")
        self.opened.append(_Wgpu(f"helper{len(self.opened) + 1}", fail_async=self.fail_async))
        return self.opened[-1]


class _Info:
    def __init__(self, runtime: str, adapter: _Adapter) -> None:
        self.runtime = runtime
        self.adapter = adapter
        self.label = "dawn-vulkan:0:Fake GPU"
        self.limits = {"max-buffer-size": 1 << 32, "max-compute-workgroup-storage-size": 49152,
                       "min-uniform-buffer-offset-alignment": 256}


class _Device:
    def __init__(self, runtime: str = "dawn", **adapter: bool) -> None:
        self.info = _Info(runtime, _Adapter(**adapter))
        self.features = frozenset({"shader-f16", "subgroup"})
        self.wgpu = _Wgpu("own")


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> list:
    """The device's own background builds (create_pipeline_later), noted."""
    begun: list = []

    def own(runtime: str, device: _Wgpu, descriptor: dict) -> Any:
        begun.append((runtime, device.name, descriptor))
        return lambda: f"{device.name} pipeline (own pool)"

    monkeypatch.setattr(_build_devices, "create_pipeline_later", own)
    return begun


SOURCE = "@compute @workgroup_size(64) fn main() {}"
# a matrix-unit kernel of about a second's estimated build, and a second of plain WGSL
MATRIX = ("enable chromium_experimental_subgroup_matrix;\n" + SOURCE).ljust(10_000)
PLAIN = SOURCE.ljust(100_000)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The estimate's clock, held still until a test moves it (`clock[0] = t`)."""
    now = [100.0]
    monkeypatch.setattr(_build_devices, "_clock", lambda: now[0])
    return now


def test_the_estimated_cost_follows_the_source() -> None:
    assert _build_devices.cost(MATRIX) == pytest.approx(1.0)
    assert _build_devices.cost(PLAIN) == pytest.approx(1.0)
    assert _build_devices.cost(SOURCE) < 0.001
    assert _build_devices.cost(MATRIX.ljust(23_000)) > 2 * _build_devices.cost(MATRIX)


def test_builds_go_to_the_pool_whose_thread_frees_first(
        monkeypatch: pytest.MonkeyPatch, later: list, clock: list[float]) -> None:
    monkeypatch.setenv(_build_devices.ENV, "2")
    device = _Device()
    waits = [_build_devices.begin(device, DESCRIPTOR, MATRIX, ENTRIES) for _ in range(7)]
    helpers = device.info.adapter.opened
    assert [h.name for h in helpers] == ["helper1", "helper2"]
    # the own pool's two threads, then each extra device's two; the 7th: the own pool's
    # threads free first (the extra devices began after their opening)
    assert [len(h.promises) for h in helpers] == [2, 2]
    assert len(later) == 3
    for helper in helpers:  # the same kernel, made of the helper's own objects
        asked = [c for c in helper.calls if c[0] == "async"]
        compute = asked[0][1]["compute"]
        assert compute["module"] == f"{helper.name} module"
        assert compute["entry_point"] == "main" and compute["constants"] == {"scale": 2.0}
        assert ("layout", ENTRIES) in helper.calls
        assert any(c[0] == "module" and SOURCE in c[1] for c in helper.calls)
    request = device.info.adapter.requests[0]
    assert request["required_features"] == ["shader-f16", "subgroup"]
    assert "min-uniform-buffer-offset-alignment" not in request["required_limits"]
    assert request["required_limits"]["max-compute-workgroup-storage-size"] == 49152
    # waiting for one given to an extra device: built there, then on the device itself
    assert not device.wgpu.calls
    assert waits[2]() == "own pipeline"
    assert helpers[0].promises[0].waited
    assert device.wgpu.calls == [("build", DESCRIPTOR)]
    assert waits[0]() == "own pipeline (own pool)"


def test_a_long_build_holds_up_only_its_own_thread(
        monkeypatch: pytest.MonkeyPatch, later: list, clock: list[float]) -> None:
    """Round-robin turns put builds behind a 2.5 s GEMM while other pools idled: here each
    goes to the thread estimated to free first."""
    monkeypatch.setenv(_build_devices.ENV, "1")
    device = _Device()
    long = MATRIX.ljust(25_000)
    where = []
    for source in (long, long, MATRIX, MATRIX, MATRIX, MATRIX):
        own = len(later)
        _build_devices.begin(device, DESCRIPTOR, source, ENTRIES)
        where.append("own" if len(later) > own else "extra")
    (helper,) = device.info.adapter.opened
    # the own pool's threads build the two long ones (2.5 s), the extra device the four
    # others (2 x 1 s a thread): turns would have given each pool a long one and two others
    assert where == ["own", "own", "extra", "extra", "extra", "extra"]
    assert len(helper.promises) == 4
    # with time gone by, every thread is free again: the own pool takes the next ones
    clock[0] += 10.0
    _build_devices.begin(device, DESCRIPTOR, MATRIX, ENTRIES)
    _build_devices.begin(device, DESCRIPTOR, MATRIX, ENTRIES)
    assert len(later) == 4 and len(helper.promises) == 4


def test_cheap_builds_open_no_extra_device(
        monkeypatch: pytest.MonkeyPatch, later: list, clock: list[float]) -> None:
    monkeypatch.setenv(_build_devices.ENV, "3")
    device = _Device()
    for _ in range(20):  # 20 element-wise kernels: less than an opening's cost in all
        _build_devices.begin(device, DESCRIPTOR, SOURCE, ENTRIES)
    assert len(later) == 20 and not device.info.adapter.requests
    _build_devices.begin(device, DESCRIPTOR, PLAIN, ENTRIES)  # a plain kernel of a second
    _build_devices.begin(device, DESCRIPTOR, PLAIN, ENTRIES)
    _build_devices.begin(device, DESCRIPTOR, SOURCE, ENTRIES)
    assert len(device.info.adapter.opened) == 1


def test_a_failed_build_on_an_extra_device_is_the_devices_own_to_report(
        monkeypatch: pytest.MonkeyPatch, later: list, clock: list[float]) -> None:
    monkeypatch.setenv(_build_devices.ENV, "1")
    device = _Device(fail_async=True)
    waits = [_build_devices.begin(device, DESCRIPTOR, MATRIX, ENTRIES) for _ in range(4)]
    assert waits[2]() == "own pipeline"  # its error, were there one, would be the device's

    def broken(**descriptor: Any) -> str:
        raise RuntimeError("Error while parsing WGSL: :3:5 error: bad")

    monkeypatch.setattr(device.wgpu, "create_compute_pipeline", broken)
    with pytest.raises(RuntimeError, match="parsing WGSL"):
        waits[3]()


@pytest.mark.parametrize("case", ["refused", "none", "cached", "not dawn", "unreadable"])
def test_no_extra_device_where_none_can_or_should_open(
        monkeypatch: pytest.MonkeyPatch, later: list, clock: list[float], case: str) -> None:
    monkeypatch.setenv(_build_devices.ENV, {"none": "0", "unreadable": "many"}.get(case, "3"))
    device = _Device(runtime="wgpu" if case == "not dawn" else "dawn",
                     refuse=case == "refused")
    if case == "cached":
        _build_devices.expect_cached(device)
    for _ in range(5):
        _build_devices.begin(device, DESCRIPTOR, MATRIX, ENTRIES)
    assert len(later) == 5
    assert not device.info.adapter.opened
    assert len(device.info.adapter.requests) == (1 if case == "refused" else 0)


def test_the_default_count_leaves_cores_to_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_build_devices.ENV, raising=False)
    for cores, expected in ((1, 0), (2, 0), (4, 1), (16, 7), (64, 7)):
        monkeypatch.setattr(_build_devices.os, "cpu_count", lambda c=cores: c)
        assert _build_devices.count() == expected


def test_the_count_is_for_the_whole_process(monkeypatch: pytest.MonkeyPatch,
                                            later: list, clock: list[float]) -> None:
    monkeypatch.setenv(_build_devices.ENV, "3")
    first, second = _Device(), _Device()
    for _ in range(6):  # its own pool's two threads, then two extra devices' two each
        _build_devices.begin(first, DESCRIPTOR, MATRIX, ENTRIES)
    for _ in range(8):  # the one extra device left, then its own pool and that one
        _build_devices.begin(second, DESCRIPTOR, MATRIX, ENTRIES)
    assert len(first.info.adapter.opened) == 2
    assert len(second.info.adapter.opened) == 1
    assert len(later) == 2 + 4
    assert len(second.info.adapter.opened[0].promises) == 4


def test_an_extra_device_is_destroyed_once_its_builds_are_waited_for(
        monkeypatch: pytest.MonkeyPatch, later: list, clock: list[float]) -> None:
    """Extra devices hold GPU memory: none stays open between bursts of new kernels."""
    monkeypatch.setenv(_build_devices.ENV, "1")
    device = _Device()
    waits = [_build_devices.begin(device, DESCRIPTOR, MATRIX, ENTRIES) for _ in range(4)]
    (helper,) = device.info.adapter.opened  # builds 3 and 4
    assert waits[2]() == "own pipeline" and not helper.destroyed  # one build still its own
    assert waits[3]() == "own pipeline" and helper.destroyed
    assert all(p.waited for p in helper.promises)
    # the next burst opens another one, and the count allows it (the first is gone)
    for _ in range(3):
        _build_devices.begin(device, DESCRIPTOR, MATRIX, ENTRIES)
    assert len(device.info.adapter.opened) == 2 and not device.info.adapter.opened[1].destroyed
