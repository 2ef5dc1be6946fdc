"""The cross-backend matrix: `device` runs a test once per adapter present.

Restrict with GPUCORE_BACKEND=vulkan (or gl, metal, dx12; comma-separated for several).
The runtime is GPUCORE_RUNTIME's: wgpu-native by default, Dawn's adapters with
GPUCORE_RUNTIME=dawn, both with GPUCORE_RUNTIME=auto (Dawn needs `wgpudawn` and a GPU).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import gpucore
from gpucore import autotune

# fixtures some folders share, kept out of conftest.py files of their own: a second module
# named `conftest` would shadow this one for every `from conftest import ...` of a whole run
pytest_plugins = ["browser_fixtures", "flow_fixtures", "loader_fixtures"]

# gpucore's tests load the `core/` kernels without gpustd, which registers them for ops
gpucore.register_shader_root("shaders")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # references never reach a hub
# Mesa's on-disk shader cache stays off in the test processes (and the CLI processes they start)
# unless a test turns it on (tests/gpucore/test_cache.py does, for the cache it checks): Mesa
# 22.3's lavapipe (Debian 12, CI's driver) hung inside vkQueueSubmit, every thread waiting, in
# two of five single-process runs of the gpucore tests with an empty cache being written, and in
# none with the cache off or already full; CI starts with an empty cache every time. The
# driver's cache speeds a second process; within one test process it saves nothing.
os.environ.setdefault("MESA_SHADER_CACHE_DISABLE", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one pytest process per core (CI's -n 2 on 2 cores): torch's references on one thread
    # each, read when torch first starts its pool; two threads a process spun against the other
    # process's (a tiny SDXL ControlNet reference picture: 19 s on two, 0.2 s on one)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

_devices: dict[int, gpucore.Device] = {}


def _adapters() -> list[gpucore.AdapterInfo]:
    present = gpucore.devices()
    wanted = os.environ.get("GPUCORE_BACKEND")
    if wanted:
        keep = {w.strip().lower() for w in wanted.split(",")}
        present = [a for a in present if a.backend in keep]
    return present


ADAPTERS = _adapters()


def _id(info: gpucore.AdapterInfo) -> str:
    prefix = "" if info.runtime == "wgpu" else f"{info.runtime}-"
    return f"{prefix}{info.backend}{info.index}"


@pytest.fixture(
    scope="session",
    params=ADAPTERS or [None],
    ids=[_id(a) for a in ADAPTERS] or ["no-adapter"],
)
def device(request: pytest.FixtureRequest) -> gpucore.Device:
    """One Device per adapter, opened once per session."""
    info = request.param
    if info is None:
        pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)")
    return _open(info)


@pytest.fixture(scope="session")
def first_device() -> gpucore.Device:
    """The first adapter's Device, unparametrized: for tests of adapter-independent logic
    (samplers, schedules, prompt handling) that drive a model only to see it end to end."""
    if not ADAPTERS:
        pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)")
    return _open(ADAPTERS[0])


def _open(info: gpucore.AdapterInfo) -> gpucore.Device:
    """The session's one Device for adapter `info` (the fixtures share it)."""
    if info.index not in _devices:
        _devices[info.index] = gpucore.Device(info)
    return _devices[info.index]


class _SessionDefault:
    """Stands in for gpucore._default's `Device`: `default_device()` (what the CLI, the server
    and `load_pipeline` without a device open) is the session Device of the adapter
    `Device.auto()` would choose, so those tests reuse the kernels the device fixtures' tests
    compiled on it, and theirs (a second Device of the same adapter compiles every kernel
    again, seconds each on CI's software adapters)."""

    @staticmethod
    def auto() -> gpucore.Device:
        from gpucore._adapters import choose_adapter

        return _open(choose_adapter())


gpucore._default.Device = _SessionDefault  # type: ignore[attr-defined,assignment]


def session_devices() -> list[gpucore.Device]:
    """Every adapter's session Device, the ones the device fixtures give: for tests of
    several devices at once, which then reuse the kernels earlier tests compiled (a fresh
    Device compiles every kernel again, seconds each on CI's software adapters)."""
    return [_open(info) for info in ADAPTERS]


def checkout_env() -> dict[str, str]:
    """os.environ for a subprocess (`python -m ...`) that imports this checkout: its root first
    on PYTHONPATH, then whatever the caller had there (the GPU machine's wheels live there)."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def sweep_subset_elsewhere(device: gpucore.Device, in_subset: bool) -> None:
    """For a kernel-variant sweep (tiles, layouts, plans): every variant runs on the first
    adapter, and on the others only those `in_subset`; skips the rest, saying why.

    The variants differ in tile logic, which one adapter shows; a further adapter differs in
    code generation (OpenGL: naga's GLSL, which llvmpipe compiles again), which a representative
    subset shows. On CI's 2 cores each variant is a fresh shader compile of seconds."""
    if not in_subset and ADAPTERS and device.info.index != ADAPTERS[0].index:
        pytest.skip("every kernel variant runs on the first adapter; this adapter differs in "
                    "code generation, not tile logic, and runs a representative subset")


def host_variant_on_first_adapter(device: gpucore.Device, what: str) -> None:
    """For a pipeline test's variant that differs from its representative variant in host
    logic only (a scheduler's timestep mapping, mask blending): it runs on the first adapter;
    the others run the representative variant, which exercises the same kernels. A pipeline
    test costs ~20-30 s on CI's 2 cores per adapter."""
    if ADAPTERS and device.info.index != ADAPTERS[0].index:
        pytest.skip(f"{what} differs from the variant this adapter runs in host logic only; "
                    "it runs on the first adapter")


_emulated: dict[int, gpucore.Device] = {}


def matrix_device(device: gpucore.Device) -> gpucore.Device:
    """`device`, or where it has no subgroup matrices but can emulate them (a wgpu-native
    adapter with shader-f16 and subgroups: CI's lavapipe) a Device of the same adapter whose
    matrix units are emulated in plain WGSL (gpucore/_matrix_emulation.py), opened once. The
    matrix-unit test modules take it as their `device`, so CI checks those kernels' results."""
    info = device.info
    if info.matrix_configs:
        return device
    if info.index not in _emulated:
        try:
            _emulated[info.index] = gpucore.Device(info.with_emulated_matrices())
        except gpucore.GpuError:  # no f16 or no subgroups (OpenGL): the tests skip it
            return device
    return _emulated[info.index]


def emulated_subset(device: gpucore.Device, in_subset: bool) -> None:
    """For a matrix-unit test's case: with emulated matrix units (see matrix_device) only a
    representative subset runs, those `in_subset`; skips the rest, saying why. Each kernel
    is a compile of seconds there, and a tile past 32 KiB of workgroup memory (lavapipe's
    limit) cannot run; Dawn on a GPU runs every case."""
    if not in_subset and any(c.emulated for c in device.info.matrix_configs):
        pytest.skip("emulated matrix units run a representative subset of the cases "
                    "(each a compile of seconds on CI's 2 cores); a GPU under Dawn runs all")


def emulated_tile(device: gpucore.Device, tile: Any) -> Any:
    """A matrix-unit test's tile (a gpustd MatrixTile), or with emulated matrix units (see
    matrix_device) the same tile with one fragment a subgroup: an emulated kernel's compile
    grows with the fragments each subgroup holds (a 64 x 64 tile's 2 x 2: 18 s of CI's 2 cores
    for a parts-with-biases case; 1 x 1: 4 s). For tests of what does not depend on the
    fragment count (parts, biases, ragged rows, epilogues); the tiles' own tests keep theirs,
    and a GPU under Dawn runs the tile as given."""
    import dataclasses

    if any(c.emulated for c in device.info.matrix_configs):
        return dataclasses.replace(tile, fm=1, fn=1)
    return tile


def emulated_tiles(monkeypatch: pytest.MonkeyPatch, device: gpucore.Device,
                   *records: tuple[Any, str]) -> None:
    """With emulated matrix units, the recording functions `records` ((module, name), each
    taking the tile as `tile=`) run in emulated_tile's tile of the one their caller chose, for
    the rest of the test: the routing is the planner's, the compile a quarter."""
    if not any(c.emulated for c in device.info.matrix_configs):
        return
    for module, name in records:
        record = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, tile, _record=record, **kw: _record(
            *a, tile=emulated_tile(device, tile), **kw))


@pytest.fixture(scope="session")
def f16_device(device: gpucore.Device) -> gpucore.Device:
    """`device`, skipping adapters without shader-f16 (such as OpenGL)."""
    if not device.has_f16:
        pytest.skip(f"{device.backend} adapter {device.name!r} has no shader-f16")
    return device


def pytest_collection_finish(session: pytest.Session) -> None:
    """What importing and collecting made (torch, diffusers, transformers, the test modules:
    ~0.83M of the ~1.14M objects a worker holds at the end of a whole-suite run) frozen for the
    session (gc.freeze): a worker's full collections, explicit and automatic (82-99 a worker,
    55-79 s of its time in a whole-suite -n 2 run here), then traverse only what the tests made.
    young_heap's end lifts it (gc.unfreeze has no levels): from there on, as without it."""
    gc.collect()
    gc.freeze()


@pytest.fixture
def young_heap() -> Iterator[None]:
    """For a test that collects garbage (gc.collect(), or a memory cap before it refuses):
    every object made before it is frozen (gc.freeze) while it runs, so a collection traverses
    the test's own objects, not a whole-suite worker's heap (~3 s each on CI's 2 cores, against
    0.02 in one file's process). Earlier tests' garbage stays as it is until the test ends: no
    collection frees its buffers during the test either. Its end unfreezes everything, the
    session's frozen imports too (pytest_collection_finish)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """For the autotuner's tests: a private cache directory, tuning off, nothing remembered
    from other tests (they take it with `pytestmark = pytest.mark.usefixtures("cache_home")`)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("AVX_GPU_CACHE_DIR", raising=False)
    monkeypatch.delenv(autotune.ENV, raising=False)
    autotune.clear()
    yield tmp_path
    autotune.clear()


_DEVICE_FIXTURES = frozenset({"device", "first_device", "f16_device"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`nodevice` (host logic; `pytest -m nodevice` runs it alone) must stay true: a test marked
    so that takes a device fixture is a usage error.

    Then the run order: files with a `slow` test first."""
    for item in items:
        taken = _DEVICE_FIXTURES & set(getattr(item, "fixturenames", ()))
        if taken and item.get_closest_marker("nodevice") is not None:
            raise pytest.UsageError(f"{item.nodeid} is marked nodevice but takes {sorted(taken)}: "
                                    "drop the marker or the fixture")
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    # slow files first, otherwise as collected: grouping each family's files
    # (run_order.ordered) measured 1388 s against 1207 s for the whole .ci/run (2 cores)
    items.sort(key=lambda i: i.nodeid.split("::")[0] not in slow)


@pytest.fixture(autouse=True)
def _nodevice_opens_none(request: pytest.FixtureRequest) -> None:
    """A test marked `nodevice` that opens a gpucore.Device anyway (Device.auto(), a pipeline
    on the default device) fails, saying so."""
    if request.node.get_closest_marker("nodevice") is None:
        return

    def refuse(self: gpucore.Device, *args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{request.node.nodeid} is marked nodevice but opened a "
                           "gpucore.Device: drop the marker or the device")

    request.getfixturevalue("monkeypatch").setattr(gpucore.Device, "__init__", refuse)


@pytest.fixture(autouse=True)
def _no_memory_cap_left() -> Iterator[None]:
    """A test that leaves a memory cap on a session Device (a memory mode's budget still in
    effect: a pipeline dropped with --max-vram set) fails, and the cap is lifted, so that it
    does not fail every later test of that worker with a MemoryLimitError."""
    yield
    left = [(d, d.memory_limit.bytes) for d in _devices.values()
            if d.memory_limit.bytes is not None]
    for d, _ in left:
        d.memory_limit.set(None)
    if left:
        pytest.fail("the test left a memory cap set on the session device "
                    f"({left[0][1]} bytes): switch the memory mode off "
                    "(set_memory_mode(MemoryMode())) in a finally", pytrace=False)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return ["adapters: " + (", ".join(f"{_id(a)}={a.name}" for a in ADAPTERS) or "none")]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per adapter: how many device tests passed/skipped/failed on it."""
    counts: dict[str, dict[str, int]] = {_id(a): {} for a in ADAPTERS}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            for adapter_id, tally in counts.items():
                if f"[{adapter_id}" in report.nodeid or f"-{adapter_id}" in report.nodeid:
                    tally[outcome] = tally.get(outcome, 0) + 1
    terminalreporter.write_line("device-test matrix:")
    for info in ADAPTERS:
        tally = counts[_id(info)]
        text = ", ".join(f"{n} {k}" for k, n in tally.items()) or "no tests"
        terminalreporter.write_line(f"  {_id(info)} ({info.backend}, {info.name}): {text}")
