"""bench.flux_cache's smoke run (--quick: tiny FLUX and SD 3.5, 6 steps): every cache beside
diffusers' hook where it has one, the steps computed counted on both sides."""

from __future__ import annotations

import pytest

pytest.importorskip("diffusers", reason="diffusers is the benchmark's baseline")

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)


def test_quick_run_has_a_row_per_cache_and_implementation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import flux_cache

    monkeypatch.setenv("BENCH_MODELS", "flux,sd35")
    monkeypatch.setenv("BENCH_CACHE", "fbc:5,magcache:0.06,teacache:0.4")
    result = flux_cache.run(quick=True)
    rows = {(row["model"], row["impl"], row["cache"]): row for row in result["rows"]}
    caches = ("none", "fbc 5", "magcache 0.06")
    assert set(rows) == {
        *(("flux", impl, cache) for impl in ("diffusers", "ours") for cache in caches),
        ("flux", "ours", "teacache 0.4"),
        ("sd35", "diffusers", "none"), ("sd35", "ours", "none"), ("sd35", "ours", "fbc 5")}
    # MagCache decides by the schedule alone: the same steps skipped on both sides
    flux = {(impl, cache): row for (model, impl, cache), row in rows.items() if model == "flux"}
    assert flux["ours", "magcache 0.06"]["computed"] == flux["diffusers", "magcache 0.06"][
        "computed"] < 6
    assert flux["ours", "none"]["computed"] == 6 and flux["ours", "none"]["speedup"] == 1
    assert 0 < flux["ours", "magcache 0.06"]["rel_err_vs_uncached"] < 0.5
    assert flux["ours", "magcache 0.06"]["vs_diffusers"] > 0
    assert "vs_diffusers" not in flux["ours", "teacache 0.4"]
    assert rows["sd35", "ours", "fbc 5"]["computed"] < 6
