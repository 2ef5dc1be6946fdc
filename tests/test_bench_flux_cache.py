"""bench.flux_cache's smoke run (--quick: tiny FLUX, 6 steps): every cache beside diffusers'
hook where it has one, the steps computed counted on both sides."""

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

    monkeypatch.setenv("BENCH_CACHE", "magcache:0.06,teacache:0.4")
    result = flux_cache.run(quick=True)
    rows = {(row["impl"], row["cache"]): row for row in result["rows"]}
    assert set(rows) == {("diffusers", "none"), ("diffusers", "magcache 0.06"),
                         ("ours", "none"), ("ours", "magcache 0.06"), ("ours", "teacache 0.4")}
    # MagCache decides by the schedule alone: the same steps skipped on both sides
    assert rows["ours", "magcache 0.06"]["computed"] == rows["diffusers", "magcache 0.06"][
        "computed"] < 6
    assert rows["ours", "none"]["computed"] == 6 and rows["ours", "none"]["speedup"] == 1
    assert 0 < rows["ours", "magcache 0.06"]["rel_err_vs_uncached"] < 0.5
    assert rows["ours", "magcache 0.06"]["vs_diffusers"] > 0
    assert "vs_diffusers" not in rows["ours", "teacache 0.4"]
