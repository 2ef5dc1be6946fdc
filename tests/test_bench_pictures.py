"""bench.pictures' smoke run (--quick: tiny configs at 64x64, 2 steps), FLUX alone (the SDXL
row takes as long again): both sides load the one written folder and FLUX's pictures, from
the same noise and schedule, agree."""

from __future__ import annotations

import pytest

pytest.importorskip("diffusers", reason="diffusers is the benchmark's baseline")

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)


def test_quick_flux_picture_matches_diffusers(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import pictures

    monkeypatch.setenv("BENCH_MODELS", "flux")
    [row] = pictures.run(quick=True)["rows"]
    assert (row["model"], row["size"], row["steps"]) == ("flux", "64x64", 2)
    assert row["ours_picture_std"] > 5 and row["diffusers_picture_std"] > 5  # not flat
    # float16 (float32 without shader-f16) against torch float32 on the CPU
    assert row["mean_abs_diff"] < 0.5 and row["max_abs_diff"] <= 3
    assert row["ours_s"] > 0 and row["diffusers_s"] > 0
    assert row["vs_diffusers"] == pytest.approx(row["diffusers_s"] / row["ours_s"])
    assert 0 < row["ours_steps_share"] < 1


def test_an_unknown_model_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import pictures

    monkeypatch.setenv("BENCH_MODELS", "flux,sd35")
    with pytest.raises(ValueError, match=r"\['sd35'\]; use any of sdxl, flux"):
        pictures.run(quick=True)
