"""gpucore's cache directory (gpucore._cache) and the autotuner's use of it: where it is, what
its keys hold (a changed kernel source or adapter is a miss), a corrupt or truncated entry
ignored with a warning and rebuilt, two processes writing at once leaving it valid, a size cap,
and a second cold process on the same machine compiling no kernel the driver already has."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import checkout_env
from support import ROOT

import gpucore
from gpucore import _cache, _shaders, autotune

pytestmark = pytest.mark.usefixtures("cache_home")  # conftest: private cache, tuning off

CANDIDATES = ("slow", "fast")


def sleeping_trial(name: str) -> Callable[[], None]:
    return lambda: time.sleep({"fast": 0.0, "slow": 0.02}[name])  # a gap load cannot reorder


def refusing_trial(name: str) -> Callable[[], None]:
    raise AssertionError(f"the tuner timed {name} where the cache should have answered")


def select(device: gpucore.Device, trial: autotune.Trial = sleeping_trial,
           shape_class: str = "n10") -> str:
    return autotune.select(device, "toy", shape_class, CANDIDATES, "slow", trial)


@pytest.mark.nodevice
def test_where_the_cache_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert _cache.cache_dir() == tmp_path / "avx-gpu"  # XDG_CACHE_HOME, from the fixture
    monkeypatch.setenv(_cache.DIR_ENV, str(tmp_path / "elsewhere"))
    assert _cache.cache_dir() == tmp_path / "elsewhere"
    assert autotune.cache_dir() == tmp_path / "elsewhere"


@pytest.mark.nodevice
def test_driver_caches_point_inside_unless_set(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    for name in ("MESA_SHADER_CACHE_DIR", "MESA_SHADER_CACHE_MAX_SIZE"):
        monkeypatch.setenv(name, "")  # so that monkeypatch restores them, set or not
        monkeypatch.delenv(name)
    monkeypatch.setenv("__GL_SHADER_DISK_CACHE_PATH", "/somewhere/of/theirs")
    _cache.point_driver_caches()
    assert os.environ["MESA_SHADER_CACHE_DIR"] == str(tmp_path / "avx-gpu" / "mesa")
    assert os.environ["MESA_SHADER_CACHE_MAX_SIZE"] == "256M"
    assert os.environ["__GL_SHADER_DISK_CACHE_PATH"] == "/somewhere/of/theirs"


@pytest.mark.nodevice
def test_a_changed_kernel_source_changes_the_hash(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    root = tmp_path / "kernels"
    (root / "area").mkdir(parents=True)
    kernel = root / "area" / "double.wgsl"
    kernel.write_text("// one\n")
    monkeypatch.setattr(_shaders, "_roots", [*_shaders._roots, (str(root), root)])
    _cache.forget_source_hash()
    before = _cache.source_hash()
    kernel.write_text("// two\n")
    assert _cache.source_hash() == before  # hashed once a process: sources do not change
    _cache.forget_source_hash()
    assert _cache.source_hash() != before
    _cache.forget_source_hash()


def test_changed_sources_or_adapter_are_a_miss(first_device: gpucore.Device,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with autotune.tuning():
        assert select(first_device) == "fast"
    autotune._memory.clear()
    assert select(first_device, refusing_trial) == "fast"  # a hit, from the file
    for change in ("sources", "adapter"):
        with monkeypatch.context() as patched:
            if change == "sources":
                patched.setattr(_cache, "source_hash", lambda: "0" * 16)
            else:
                info = dataclasses.replace(first_device.info, name="another GPU")
                patched.setattr(first_device, "info", info)
            autotune._memory.clear()
            assert select(first_device, refusing_trial) == "slow", change  # a miss: the rule
        autotune._memory.clear()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not an object"])
def test_a_damaged_entry_is_ignored_with_a_warning_and_rebuilt(
        first_device: gpucore.Device, damage: str) -> None:
    with autotune.tuning():
        select(first_device)
    path = autotune.cache_path(first_device)
    whole = path.read_bytes()
    path.write_bytes({"truncated": whole[:len(whole) // 2], "garbage": b"\x00\xff" * 40,
                      "not an object": b"[1, 2]"}[damage])
    autotune._memory.clear()
    with pytest.warns(UserWarning, match="ignoring the autotune cache"):
        assert select(first_device, refusing_trial) == "slow"
    with autotune.tuning():
        assert select(first_device, shape_class="n20") == "fast"
    data = json.loads(path.read_text())  # whole again, and keyed
    assert data["key"] == autotune.cache_key(first_device)
    assert data["ops"]["toy"]["n20"]["winner"] == "fast"


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from gpucore import _autotune, _cache
    path, who = Path(sys.argv[1]), sys.argv[2]
    listed = path.with_name("kernels-race.json")  # the kernel lists' writer (gpucore.Warmup)
    for i in range(150):
        _autotune._write_atomic(path, {"format": 1, "key": {"who": who},
                                       "ops": {"toy": {f"n{i}": {"winner": "x" * (i * 7)}}}})
        assert _cache.write_json(listed, {"who": who}, {"kernels": ["y" * (i * 11)]})
""")


def test_two_processes_writing_at_once_leave_it_valid(tmp_path: Path) -> None:
    path = tmp_path / "avx-gpu" / "autotune-race.json"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), who],
                                env=checkout_env(), cwd=ROOT, stderr=subprocess.PIPE)
               for who in ("a", "b")]
    listed = path.with_name("kernels-race.json")
    reads = 0
    while any(w.poll() is None for w in writers):
        for written in (path, listed):
            if written.exists():
                json.loads(written.read_text())  # never a partial file
                reads += 1
    for w in writers:
        assert w.wait() == 0, w.stderr.read().decode() if w.stderr else ""
    assert json.loads(path.read_text())["key"]["who"] in ("a", "b")
    who = json.loads(listed.read_text())["key"]["who"]
    assert _cache.read_json(listed, {"who": who}, "kernel list") is not None
    assert not list(path.parent.glob("*.tmp")), "a temporary file was left behind"
    assert reads > 0


@pytest.mark.nodevice
def test_trim_keeps_the_newest_under_the_cap_and_spares_the_drivers(tmp_path: Path) -> None:
    root = _cache.cache_dir()
    (root / "mesa").mkdir(parents=True)
    (root / "mesa" / "entry").write_bytes(b"m" * 5000)
    for i in range(5):
        path = root / f"autotune-{i}.json"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (1000 + i, 1000 + i))
    assert _cache.trim(limit=2500) == 3
    assert sorted(p.name for p in root.glob("autotune-*")) == ["autotune-3.json",
                                                              "autotune-4.json"]
    assert (root / "mesa" / "entry").exists()
    assert _cache.usage() == {"own": 2000, "mesa": 5000, "nvidia": 0}
    assert _cache.clear() == 7000
    assert list(root.iterdir()) == []


PROBE = textwrap.dedent("""
    import numpy as np
    import gpucore
    import gpustd
    device = gpucore.Device.select(backend="vulkan")
    x = gpustd.asarray(np.arange(1000, dtype=np.float32), device=device)
    print(float((gpustd.exp(x * 0.001) + 1.0).sum().numpy()), device.pipelines_created)
    del x, device  # the device released: Mesa finishes writing its cache then
    import gc
    gc.collect()
    gpucore.release_dead_devices()
""")


def _driver_entries(root: Path) -> dict[str, int]:
    """Each file of a driver's cache and when it was last written."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file()}


def test_a_second_cold_process_compiles_no_kernel_it_has(tmp_path: Path) -> None:
    """lavapipe keeps compiled pipelines in Mesa's shader cache, which gpucore points into its
    cache directory: the second process creates its pipelines again (wgpu-native has no
    pipeline cache of its own) and the driver compiles none of them: it adds no entry."""
    if not any(a.backend == "vulkan" and a.type == "cpu" for a in gpucore.devices()):
        pytest.skip("needs Mesa's lavapipe (a CPU Vulkan adapter): its shader cache is the "
                    "one this test can see")
    cache = tmp_path / "cold"
    env = {**checkout_env(), _cache.DIR_ENV: str(cache)}
    env.pop("MESA_SHADER_CACHE_DIR", None)
    env.pop("MESA_SHADER_CACHE_DISABLE", None)
    results = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        results.append((done.stdout.split(), _driver_entries(cache / "mesa")))
    (first, first_entries), (second, second_entries) = results
    assert first == second  # the same result from the same pipelines
    assert int(first[1]) >= 2  # it built kernels (so the cache had something to keep)
    assert first_entries, "the first process left nothing in the driver's cache"
    # the second took what the first left and compiled none of it again (which would write
    # its entry anew, or another of a new key)
    assert {k: second_entries.get(k) for k in first_entries} == first_entries
    assert len(second_entries) == len(first_entries)
