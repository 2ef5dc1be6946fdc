"""bench.wan's smoke run (--quick: tiny configs): ours beside the reference on the same random
weights for the step, the decode and the UMT5 encode, and a part that fails recorded with its
error while the others go on."""

from __future__ import annotations

import pytest

pytest.importorskip("diffusers", reason="diffusers is the benchmark's baseline")

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)


def test_quick_rows_match_the_reference_and_a_failure_keeps_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import wan

    real = wan._Part.reference

    def reference(part: wan._Part, dev: str) -> object:
        if part.name == "umt5":
            raise MemoryError("out of device memory")
        return real(part, dev)

    monkeypatch.setattr(wan._Part, "reference", reference)
    monkeypatch.setenv("BENCH_MODELS", "umt5,wan21_1_3b")
    rows = wan.run(quick=True)["rows"]
    assert [(row["model"], row["part"], row["impl"]) for row in rows] == [
        ("umt5", "encode", "ours"), ("wan21_1_3b", "step", "reference"),
        ("wan21_1_3b", "step", "ours"), ("wan21_1_3b", "decode", "reference"),
        ("wan21_1_3b", "decode", "ours")]
    assert rows[0]["error"] == "MemoryError: out of device memory"
    for row in (rows[2], rows[4]):  # float16 against torch float32 on the CPU
        assert 0 < row["rel_err"] < 5e-3, row
        assert row["dispatches"] > 0 and row["wall_ms"] > 0


def test_the_full_configs_are_the_released_models() -> None:
    """diffusers / transformers build the full configs (on torch's meta device: no memory)
    at the released models' sizes; the step's inputs are both guidance passes."""
    import diffusers
    import torch
    import transformers

    from bench import wan

    def billions(module: torch.nn.Module) -> float:
        return round(sum(p.numel() for p in module.parameters()) / 1e9, 2)

    with torch.device("meta"):
        assert billions(diffusers.WanTransformer3DModel(**wan.WAN21_1_3B)) == 1.42
        assert billions(diffusers.WanTransformer3DModel(**wan.WAN22_5B)) == 5.0
        assert billions(transformers.UMT5EncoderModel(
            transformers.UMT5Config(**wan.UMT5_XXL))) == 5.68
        for config in (wan.VAE21, wan.VAE22):
            diffusers.AutoencoderKLWan(**config)
    assert wan.MODELS["wan21_1_3b"][2] == (16, 21, 60, 104)  # 81 frames of 480 x 832
    assert wan.MODELS["wan22_5b"][2] == (48, 31, 44, 80)  # 121 frames of 704 x 1280
    part = wan._Part("wan21_1_3b", "step", True)
    assert set(part.inputs) == {"latents", "t", "positive", "negative"}
    assert part.inputs["latents"].shape == (1, *wan.TINY["wan21_1_3b"][2])


def test_an_unknown_model_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import wan

    monkeypatch.setenv("BENCH_MODELS", "wan21_1_3b,wan14b")
    with pytest.raises(ValueError, match=r"\['wan14b'\]; use any of"):
        wan.run(quick=True)
