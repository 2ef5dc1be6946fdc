"""Under `--int8` the modulated norms before attention and the MLPs, and the GELUs before the
MLPs' second projections, quantize the rows they write (gpustd.nn.int8_rows) in the DiTs beyond
FLUX and SD 3 (tests/diffusion/test_int8_shared.py has those; Chroma's blocks are theirs):
FLUX.2 and Qwen-Image steps are the same bytes as with each activation quantized by a pass of
its own, with fewer such passes. Tiny models, ragged token counts, weights scaled so the int8
rounding shows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import host_variant_on_first_adapter
from flux2_tiny import FLUX2_TINY
from qwenimage_tiny import QWENIMAGE_TINY

import gpucore
import gpustd.nn.int8_linear as int8_module
import gpustd.nn.int8_rows as int8_rows
from diffusion.models.flux2 import Flux2Transformer2DModel
from diffusion.models.int8 import quantize_linears
from diffusion.models.qwen_image import QwenImageTransformer2DModel
from gpustd import Tensor


def _step(family: str, dtype: Any, device: gpucore.Device) -> tuple[Any, Any]:
    """(model, its call) for a tiny `family` model with random weights and inputs."""
    rng = np.random.default_rng(11)

    def put(*shape: int) -> Tensor:
        return Tensor.from_numpy(rng.standard_normal(shape).astype(dtype), device=device)

    if family == "flux2":
        model: Any = Flux2Transformer2DModel(dict(FLUX2_TINY), dtype=dtype, device=device)
        rows, cols = np.meshgrid(np.arange(3), np.arange(5), indexing="ij")
        zeros = np.zeros(15)
        img = np.stack([zeros, rows.ravel(), cols.ravel(), zeros], 1).astype(np.int64)
        txt = np.stack([np.zeros(7)] * 3 + [np.arange(7)], 1).astype(np.int64)
        args: tuple[Any, ...] = (put(1, 15, 16), put(1, 7, FLUX2_TINY["joint_attention_dim"]),
                                 np.array([0.6], np.float32), img, txt, None)
    else:
        model = QwenImageTransformer2DModel(dict(QWENIMAGE_TINY), dtype=dtype, device=device)
        args = (put(1, 15, 16), put(1, 7, QWENIMAGE_TINY["joint_attention_dim"]),
                np.array([0.6], np.float32), 3, 5, None)
    model.load_state_dict({k: (rng.standard_normal(v.shape) * 0.3).astype(dtype)
                           for k, v in model.named_parameters()})
    return model, lambda: model(*args).numpy()


@pytest.mark.parametrize("family", ["flux2", "qwen"])
def test_fused_quantization_same_bytes(device: gpucore.Device, family: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    host_variant_on_first_adapter(device, "the int8 quantization folded into a DiT's norms")
    dtype = np.float16 if device.has_f16 else np.float32
    model, step = _step(family, dtype, device)
    float_out = step()
    quantize_linears(model)
    calls = []
    wrapped = int8_module.quantize_rows
    monkeypatch.setattr(int8_module, "quantize_rows",
                        lambda *a, **k: calls.append(1) or wrapped(*a, **k))
    fused = step()
    fused_calls = len(calls)
    monkeypatch.setattr(int8_rows, "FUSED", False)
    calls.clear()
    separate = step()
    assert fused_calls < len(calls)
    assert np.array_equal(fused, separate)
    assert not np.array_equal(fused, float_out)  # the W8A8 layers ran
    assert np.abs(fused - float_out).max() < 0.1 * np.abs(float_out).max()
