"""gpucore.autotune: the cache (round trip, corruption, what its key holds), the policy (off by
default, never inside a capture), the `tune` command, and the GEMM tuner's promise that every
candidate computes the default's result bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import checkout_env
from support import ROOT

import gpucore
from gpucore import autotune
from gpucore.__main__ import main as gpucore_main
from gpustd import Tensor, linalg
from gpustd.gemm import cpu as gemm_cpu
from gpustd.gemm import dispatch, portable, tuning
from gpustd.gemm import plan as gemm_plan

CANDIDATES = ("slow", "fast", "slower")
# GEMM candidates covering every way gemm.wgsl's tiles differ (BK 8/16, 4 or 8 outputs per
# invocation, square and both oblong shapes, both main loops); compiling all 22 on CI's CPU
# adapter would take minutes.
GEMM_SUBSET = ("64x64/paired", "128x64k16/plain", "64x128/plain", "32x32k16/paired",
               "64x64t4/plain", "32x32/plain")


pytestmark = pytest.mark.usefixtures("cache_home")  # conftest: private cache, tuning off


def sleeping_trial(calls: list[str]) -> Callable[[str], Callable[[], None]]:
    """Candidates that take 0 ("fast"), 20 ("slow") or 40 ms ("slower") of wall time: gaps
    that a loaded machine's scheduling noise does not reorder."""
    delay = {"fast": 0.0, "slow": 0.02, "slower": 0.04}

    def trial(name: str) -> Callable[[], None]:
        calls.append(name)
        return lambda: time.sleep(delay[name])

    return trial


def refusing_trial(name: str) -> Callable[[], None]:
    raise AssertionError(f"the tuner timed {name} where it must not tune")


def select(device: gpucore.Device, trial: Callable[[str], Callable[[], None]],
           shape_class: str = "n10") -> str:
    return autotune.select(device, "toy", shape_class, CANDIDATES, "slow", trial)


def test_cache_round_trip(first_device: gpucore.Device) -> None:
    assert select(first_device, refusing_trial) == "slow"  # tuning is off by default
    calls: list[str] = []
    with autotune.tuning():
        assert select(first_device, sleeping_trial(calls)) == "fast"
    assert sorted(calls) == sorted(CANDIDATES)
    data = json.loads(autotune.cache_path(first_device).read_text())
    assert data["key"] == autotune.cache_key(first_device)
    entry = data["ops"]["toy"]["n10"]
    assert entry["winner"] == "fast" and entry["ms"]["slower"] > entry["ms"]["fast"]
    autotune._memory.clear()  # a new process: the winner comes from the file
    assert select(first_device, refusing_trial) == "fast"
    # A cached winner that is no longer a candidate is not used.
    assert autotune.select(first_device, "toy", "n10", ("slow", "slower"), "slow",
                           refusing_trial) == "slow"


def test_corrupt_cache_is_ignored_with_a_warning(first_device: gpucore.Device) -> None:
    path = autotune.cache_path(first_device)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"format": 1, "key": ')
    with pytest.warns(UserWarning, match="ignoring the autotune cache"):
        assert select(first_device, refusing_trial) == "slow"
    with autotune.tuning():
        assert select(first_device, sleeping_trial([]), "n20") == "fast"
    assert json.loads(path.read_text())["ops"]["toy"]["n20"]["winner"] == "fast"


def test_cache_key_holds_adapter_driver_and_version(first_device: gpucore.Device,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    key = autotune.cache_key(first_device)
    info = first_device.info
    # on Dawn also its toggles: robustness on or off changes which tile wins
    dawn = info.runtime == "dawn"
    toggles = {"toggles": ",".join(gpucore._runtime.dawn_toggles())} if dawn else {}
    assert key == {"runtime": info.runtime, "backend": info.backend, "adapter": info.name,
                   "driver": info.driver, "version": gpucore.__version__,
                   "sources": gpucore._cache.source_hash(), **toggles}
    with autotune.tuning():
        select(first_device, sleeping_trial([]))
    old_path = autotune.cache_path(first_device)
    monkeypatch.setattr(gpucore._version, "__version__", "999.0")  # what the key reads
    autotune._memory.clear()
    assert autotune.cache_path(first_device) != old_path
    assert select(first_device, refusing_trial) == "slow"  # another version tunes afresh


def test_trials_start_on_a_busy_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU that idled runs slowly until it has been busy a while (an H100's clock fell to a
    fifth): before the trials the default runs back to back for WARM_S, queued, with few
    waits, not run-and-wait for 50 ms."""
    events: list[str] = []
    device = types.SimpleNamespace(info=types.SimpleNamespace(type="discrete"),
                                   flush=lambda: events.append("flush"),
                                   synchronize=lambda: events.append("wait"))
    monkeypatch.setattr(autotune, "WARM_S", 0.3, raising=False)
    monkeypatch.setattr(autotune, "_median_ms", lambda device, run, repeat: 1.0)

    def default() -> None:
        events.append("run")
        time.sleep(0.001)

    start = time.perf_counter()
    autotune._time_all(device, {"a": default}, default, 3)
    assert time.perf_counter() - start >= 0.3
    runs, waits = events.count("run"), events.count("wait")
    assert runs > 100 and waits <= 6, (runs, waits)


def test_no_tuning_inside_a_capture(first_device: gpucore.Device,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(autotune.ENV, "1")
    with first_device.capture():
        assert select(first_device, refusing_trial) == "slow"
    calls: list[str] = []
    assert select(first_device, sleeping_trial(calls)) == "fast"  # the variable turns it on
    assert calls


def ragged_case(rng: np.random.Generator, m: int, k: int, n: int,
                trans_b: bool) -> tuple[np.ndarray, np.ndarray]:
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
    return a, b


# K 45 and 301, neither a multiple of 4: both cases read A and B in scalars, so on a CPU adapter
# (whose kernel reads the layout from its params) the second reuses the first's seven kernels
# (K 300's vec4 reads of A were seven more compiles, ~5 s of llvmpipe; test_linalg covers them)
@pytest.mark.parametrize("m, k, n, trans_b", [(37, 45, 29, True), (5, 301, 7, False)])
def test_every_gemm_candidate_is_bitwise_the_default(first_device: gpucore.Device, m: int,
                                                     k: int, n: int, trans_b: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles, K steps and loop shapes differ; the bits of C may not (the second case splits
    K, so the chunked split boundaries are exercised too). A CPU adapter runs them as a GPU
    would, not its direct kernel."""
    monkeypatch.setattr(gemm_cpu, "DIRECT", False)
    device = first_device
    a_np, b_np = ragged_case(np.random.default_rng(m), m, k, n, trans_b)
    a, b = Tensor.from_numpy(a_np, device=device), Tensor.from_numpy(b_np, device=device)
    plan = gemm_plan.batch_plan((), (), (), m * k, k * n)
    rule = gemm_plan.plan_gemm(m, n, k, 1)
    splits, _ = gemm_plan.k_partition(rule.splits, k, m * n, device)
    assert (splits > 1) == (k == 301)

    def run(**override: object) -> np.ndarray:
        c = Tensor.empty((m, n), np.float32, device=device)
        record = portable.record_gemm if override else dispatch.record_gemm  # the rule's
        record(a.buffer, b.buffer, c.buffer, None, m=m, n=n, k=k, trans_a=False,
               trans_b=trans_b, alpha=1.0, beta=0.0, plan=plan, **override)
        return c.numpy()

    default = run()
    expected = a_np.astype(np.float64) @ (b_np.T if trans_b else b_np).astype(np.float64)
    np.testing.assert_allclose(default, expected, rtol=1e-4, atol=1e-4)
    for name in GEMM_SUBSET:
        tile, paired = tuning.parse(name)
        got = run(tile=tile, paired=paired, splits=splits)
        assert got.tobytes() == default.tobytes(), f"candidate {name} changed the result"


def test_tuned_matmul_equals_untuned(first_device: gpucore.Device,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "candidates", lambda workgroup_bytes: GEMM_SUBSET)
    monkeypatch.setattr(gemm_cpu, "DIRECT", False)  # a CPU adapter tunes as a GPU would
    a_np, b_np = ragged_case(np.random.default_rng(7), 37, 45, 29, trans_b=True)
    a = Tensor.from_numpy(a_np, device=first_device)
    b = Tensor.from_numpy(b_np, device=first_device)
    untuned = linalg.matmul(a, b, trans_b=True).numpy()
    with autotune.tuning():
        tuned = linalg.matmul(a, b, trans_b=True).numpy()
    assert tuned.tobytes() == untuned.tobytes()
    (shape_class, entry), = autotune.cached(first_device)["gemm"].items()
    assert shape_class.startswith("float32/nt/m48/n32/k48/b1/s")
    assert set(entry["ms"]) == set(GEMM_SUBSET)


def test_tune_command_lists_and_clears(cache_home: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    listing = subprocess.run([sys.executable, "-m", "gpucore", "tune", "--list"],
                             env=checkout_env(),
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert "float32/nt/m8192/n384/k384/b1/s1" in listing.stdout
    assert "cache:" in listing.stdout and str(cache_home) in listing.stdout
    path = cache_home / "avx-gpu" / "autotune-0123.json"
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    assert gpucore_main(["tune", "--clear"]) == 0
    assert not path.exists()
    assert gpucore_main(["tune", "--ops", "nosuchop"]) == 2
    assert "no tunable op named nosuchop" in capsys.readouterr().err
