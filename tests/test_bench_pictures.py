"""bench.pictures' smoke run (--quick: tiny configs at 64x64, 2 steps), FLUX alone (the SDXL
row takes as long again): both sides load the one written folder and FLUX's pictures, from
the same noise and schedule, agree; with BENCH_PICTURES_REFS=fp32, ours and diffusers' float32
picture from one noise and float32 prompt embeddings, and our text encoders against diffusers'."""

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


def test_quick_flux_refs_compare_against_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import pictures

    monkeypatch.setenv("BENCH_MODELS", "flux")
    monkeypatch.setenv("BENCH_PICTURES_REFS", "fp32")
    result = pictures.run(quick=True)
    rows = {row["picture"]: row for row in result["rows"]}
    assert list(rows) == ["diffusers_fp32", "ours", "ours_own_text"]
    assert result["columns"] == pictures.REF_COLUMNS
    reference = rows["diffusers_fp32"]
    assert (reference["mean_vs_fp32"], reference["latents_rel_vs_fp32"]) == (0, 0)
    for row in rows["ours"], rows["ours_own_text"]:
        assert row["picture_std"] > 5 and row["max_vs_fp32"] <= 3
        assert len(row["latents_rel_vs_fp32_by_step"]) == 2
        assert 0 < row["latents_rel_vs_fp32"] < 1e-2 and 0 < row["first_step_rel_vs_fp32"] < 0.1
    # the folder's T5 and ours read the same embedding (an untied alias once made them differ)
    assert rows["ours_own_text"]["t5_rel_vs_fp32"] < 1e-2
    assert rows["ours_own_text"]["clip_pooled_rel_vs_fp32"] < 1e-2


def test_refs_are_named_and_for_flux_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import pictures

    monkeypatch.setenv("BENCH_MODELS", "flux")
    monkeypatch.setenv("BENCH_PICTURES_REFS", "fp8")
    with pytest.raises(ValueError, match=r"\['fp8'\]; use any of bf16, fp16, fp32"):
        pictures.run(quick=True)
    monkeypatch.setenv("BENCH_MODELS", "sdxl,flux")
    monkeypatch.setenv("BENCH_PICTURES_REFS", "fp16")
    with pytest.raises(ValueError, match="FLUX's pictures only: set BENCH_MODELS=flux"):
        pictures.run(quick=True)
