"""bench.dit_families' smoke run (--quick: tiny configs): ours beside the reference on the
same random weights (Qwen-Image 2.1's step after its prompt's prefix, made once), and a row
that fails recorded with its error while the others go on."""

from __future__ import annotations

import pytest

pytest.importorskip("diffusers", reason="diffusers is the benchmark's baseline")

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)


def test_quick_rows_match_the_reference_and_a_failure_keeps_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import dit_families

    def broken(name: str) -> object:
        raise MemoryError("out of device memory")

    real = dit_families._model
    monkeypatch.setattr(dit_families, "_model",
                        lambda name: broken(name) if name == "chroma" else real(name))
    monkeypatch.setenv("BENCH_MODELS", "chroma,qwenimage,qwenimageedit,qwenimage21")
    rows = dit_families.run(quick=True)["rows"]
    assert [(row["model"], row["impl"]) for row in rows] == [
        ("chroma", "ours"), ("qwenimage", "reference"), ("qwenimage", "ours"),
        ("qwenimageedit", "reference"), ("qwenimageedit", "ours"),
        ("qwenimage21", "reference"), ("qwenimage21", "ours")]
    assert rows[0]["error"] == "MemoryError: out of device memory"
    for ours in (rows[2], rows[4], rows[6]):  # Qwen-Image-Edit's with a reference's patches
        assert 0 < ours["rel_err"] < 5e-3  # float16 against torch float32 on the CPU
        assert ours["dispatches"] > 0
    assert rows[6]["prefix_ms"] > 0  # Qwen-Image 2.1's prompt part, timed apart


def test_hunyuan_video15_step_reads_the_prompt_made_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """HunyuanVideo 1.5's row times the step as its pipeline runs it: `prepare_text` made
    before the steps (timed apart, prefix_ms), never inside a timed step, and the step on it
    matches diffusers' on the raw blocks."""
    from bench import dit_families
    from diffusion.models.hunyuan_video15 import HunyuanVideo15Transformer3DModel as Model

    inside: list[bool] = []  # each prepare_text call: whether a step (forward) made it
    stepping = [False]
    forward, prepare = Model.forward, Model.prepare_text

    def step(self: Model, *args: object, **kwargs: object) -> object:
        stepping[0] = True
        try:
            return forward(self, *args, **kwargs)
        finally:
            stepping[0] = False

    def prepared(self: Model, *args: object, **kwargs: object) -> object:
        inside.append(stepping[0])
        return prepare(self, *args, **kwargs)

    monkeypatch.setattr(Model, "forward", step)
    monkeypatch.setattr(Model, "prepare_text", prepared)
    monkeypatch.setenv("BENCH_MODELS", "hunyuanvideo15")
    reference, ours = dit_families.run(quick=True)["rows"]
    assert (reference["impl"], ours["impl"]) == ("reference", "ours")
    assert inside and not any(inside), inside
    assert 0 < ours["rel_err"] < 5e-3 and ours["prefix_ms"] > 0  # float16 vs torch float32


def test_hidream_row_matches_diffusers(monkeypatch: pytest.MonkeyPatch) -> None:
    """HiDream-I1's row: the quick step matches diffusers' (the tiny config's mixture of 4
    experts, its Llama layers read out of order); the real config gives each of its 48 blocks
    one of Llama 3.1 8B's 32 layers. (The transformer's own tests check what each input
    does; this one checks the row's calls and config.)"""
    from bench import _dit_models, dit_families

    real = _dit_models.HIDREAM
    assert len(real["llama_layers"]) == real["num_layers"] + real["num_single_layers"] == 48
    assert sorted(set(real["llama_layers"])) == list(range(32))
    monkeypatch.setenv("BENCH_MODELS", "hidream")
    reference, ours = dit_families.run(quick=True)["rows"]
    assert (reference["impl"], ours["impl"]) == ("reference", "ours")
    assert 0 < ours["rel_err"] < 5e-3 and ours["dispatches"] > 0  # float16 vs torch float32


def test_an_unknown_model_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import dit_families

    monkeypatch.setenv("BENCH_MODELS", "qwenimage,sdxl")
    with pytest.raises(ValueError, match=r"\['sdxl'\]; use any of"):
        dit_families.run(quick=True)


def test_ernie_quick_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """ERNIE-Image's row (bench/_dit_ernie.py): ours beside diffusers' transformer on the same
    tiny random weights, the prompt's states uploaded once (prefix_ms)."""
    from bench import dit_families

    monkeypatch.setenv("BENCH_MODELS", "ernie")
    rows = dit_families.run(quick=True)["rows"]
    assert [(row["model"], row["impl"]) for row in rows] == [("ernie", "reference"),
                                                             ("ernie", "ours")]
    assert 0 < rows[1]["rel_err"] < 5e-3  # float16 against torch float32 on the CPU
    assert rows[1]["dispatches"] > 0 and rows[1]["prefix_ms"] > 0


def test_cogview4_and_cosmos2_quick_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """CogView4's and Cosmos Predict2 Text2Image's rows (bench/_dit_cogview4.py): ours beside
    diffusers' transformers on the same tiny random weights (CogView4's size condition,
    Cosmos' padding-mask channel), the prompt's states uploaded once (prefix_ms)."""
    from cosmos_tiny import install_resize

    from bench import dit_families

    install_resize()  # diffusers' Cosmos resizes its padding mask with torchvision's name

    monkeypatch.setenv("BENCH_MODELS", "cosmos2,cogview4")
    rows = dit_families.run(quick=True)["rows"]
    assert [(row["model"], row["impl"]) for row in rows] == [
        ("cosmos2", "reference"), ("cosmos2", "ours"),
        ("cogview4", "reference"), ("cogview4", "ours")]
    for ours in (rows[1], rows[3]):
        assert "error" not in ours, ours
        assert 0 < ours["rel_err"] < 5e-3  # float16 against torch float32 on the CPU
        assert ours["dispatches"] > 0 and ours["prefix_ms"] > 0


def test_pixart_quick_row_matches_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """PixArt-Σ's row on its tiny config: ours within float16 of diffusers' step (the T5
    block's padding masked on both sides)."""
    from bench import dit_families

    monkeypatch.setenv("BENCH_MODELS", "pixart")
    rows = dit_families.run(quick=True)["rows"]
    assert [(row["model"], row["impl"]) for row in rows] == [
        ("pixart", "reference"), ("pixart", "ours")]
    assert 0 < rows[1]["rel_err"] < 5e-3 and rows[1]["dispatches"] > 0


def test_nucleus_quick_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """NucleusMoE-Image's row (bench/_dit_nucleus.py): ours beside diffusers' transformer on
    the same tiny random weights (a dense block, a mixture of experts), the prompt's states
    uploaded once (prefix_ms)."""
    from bench import dit_families

    monkeypatch.setenv("BENCH_MODELS", "nucleus")
    rows = dit_families.run(quick=True)["rows"]
    assert [(row["model"], row["impl"]) for row in rows] == [("nucleus", "reference"),
                                                             ("nucleus", "ours")]
    assert 0 < rows[1]["rel_err"] < 5e-3  # float16 against torch float32 on the CPU
    assert rows[1]["dispatches"] > 0 and rows[1]["prefix_ms"] > 0
