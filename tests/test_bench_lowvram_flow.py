"""bench.lowvram's flow rows without running them (their smoke run, `BENCH_LOWVRAM=flux,
qwenimage python -m bench lowvram --quick`, takes minutes on lavapipe): the networks built at
the released models' sizes, the random weights they load, and an unknown model named."""

from __future__ import annotations

import numpy as np
import pytest

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)


def _count(module: object) -> float:
    return round(sum(t.size for _, t in module.named_parameters()) / 1e9, 2)  # type: ignore[attr-defined]


def test_the_full_networks_are_the_released_models() -> None:
    """Built deferred (no GPU memory) at the configs' sizes: FLUX.1 dev's 11.9 B transformer,
    T5-XXL's 4.76 B, CLIP-L's 0.12 B; Qwen-Image's 20.4 B and Qwen2.5-VL-7B's 7.07 B
    language model."""
    from bench import _lowvram_flow as flow
    from bench._dit_models import QWEN25VL_7B, QWEN_IMAGE
    from bench.flux import FLUX_DEV
    from diffusion.models import CLIPTextModel, FluxTransformer2DModel, T5EncoderModel
    from diffusion.models.llm import LLMTextModel
    from diffusion.models.qwen_image import QwenImageTransformer2DModel
    from gpustd.nn import deferred

    with deferred():
        assert _count(FluxTransformer2DModel(dict(FLUX_DEV))) == 11.9
        assert _count(T5EncoderModel(flow.T5_XXL)) == 4.76
        assert _count(CLIPTextModel(flow.CLIP_L)) == 0.12
        assert _count(QwenImageTransformer2DModel(dict(QWEN_IMAGE))) == 20.43
        assert _count(LLMTextModel(dict(QWEN25VL_7B, model_type="qwen2_5_vl_text"))) == 7.07


def test_random_weights_are_windows_of_one_pool() -> None:
    """Each tensor a window of the pool at an offset of its own (not all the same values), a
    norm's scale near one, a tensor larger than the pool its values repeated."""
    from bench._lowvram_flow import TINY, _RandomWeights
    from diffusion.models import T5EncoderModel
    from gpustd.nn import deferred

    with deferred():
        model = T5EncoderModel(TINY["t5"])
    pool = (np.random.default_rng(0).standard_normal(4096) * 0.02).astype(np.float16)
    weights = _RandomWeights(model, pool, seed=1)
    assert set(weights) == {key for key, _ in model.named_parameters()}
    q = weights["encoder.block.0.layer.0.SelfAttention.q.weight"]
    k = weights["encoder.block.0.layer.0.SelfAttention.k.weight"]
    assert q.shape == k.shape == (32, 32) and not np.array_equal(q, k)
    assert np.isin(q, pool).all() and abs(float(q.std()) - 0.02) < 0.005
    norm = weights["encoder.block.0.layer.0.layer_norm.weight"]
    assert abs(float(norm.mean()) - 1) < 0.01 and norm.std() > 0
    shared = weights["shared.weight"]  # 32128 x 32: larger than the pool
    assert shared.shape == (32128, 32) and np.array_equal(shared.reshape(-1)[:4096], pool)


def test_an_unknown_model_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import lowvram

    monkeypatch.setenv("BENCH_LOWVRAM", "flux,qwen-image")
    with pytest.raises(ValueError, match=r"\['qwen-image'\]; use any of"):
        lowvram.run(quick=True)
