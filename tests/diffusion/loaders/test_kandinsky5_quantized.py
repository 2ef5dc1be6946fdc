"""Kandinsky 5 transformers as people download them quantized: city96-style GGUFs of the
original layout (Q8_0 and Q4_K) load with their matrices kept quantized and compute what diffusers'
Kandinsky5Transformer3DModel computes with the file's tensors dequantized by gguf itself, and
stay near the unquantized model (the quantization's error, not a wrong tensor); ComfyUI's fp8
and scaled fp8 files read as the values they stand for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from diffusers.models.transformers import transformer_kandinsky
from kandinsky5_tiny import KANDINSKY5_TINY, tiny_kandinsky5_transformer
from safetensors.torch import save_file
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.loaders.component import load_component
from diffusion.loaders.kandinsky5 import kandinsky5_family, load_kandinsky5_file
from diffusion.models.kandinsky5 import Kandinsky5Transformer3DModel
from gpustd import asarray
from gpustd.nn import deferred
from gpustd.quant import QuantizedTensor

# rows of whole Q4_K super-blocks (256 values) in every matrix but the patch embedding's
QUANTIZABLE = {**KANDINSKY5_TINY, "model_dim": 256, "ff_dim": 512, "time_dim": 256,
               "in_text_dim": 256, "in_text_dim2": 256, "num_text_blocks": 1,
               "num_visual_blocks": 1}
# ours on the dequantized values against diffusers': float32 rounding, measured up to 2.7e-6
TOL = 1e-5
# the quantized model's distance from the float one (relative L2 of the velocity): measured
# 0.017 (Q8_0) and 0.23 (Q4_K), the matrices' own 0.0054 and up to 0.079 three times over
# (the tiny random model's gain)
NEAR = {"q8_0": 0.03, "q4_k": 0.35}


class _NoBfloat16:
    """torch as transformer_kandinsky sees it, bfloat16 being float32: diffusers rounds the
    rotated q and k to bfloat16 whatever the dtype, which this comparison leaves out."""

    def __getattr__(self, name: str) -> Any:
        return torch.float32 if name == "bfloat16" else getattr(torch, name)


def _velocity(model: Any, latents: np.ndarray, states: np.ndarray, pooled: np.ndarray,
              t: float) -> np.ndarray:
    """diffusers' forward at the positions Kandinsky5T2IPipeline passes, without the bf16
    rounding."""
    frames, height, width = latents.shape[1:4]
    visual = [torch.arange(frames), torch.arange(height // 2), torch.arange(width // 2)]
    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        patch.setattr(transformer_kandinsky, "torch", _NoBfloat16())
        return model(torch.from_numpy(latents), torch.from_numpy(states), torch.tensor([t]),
                     torch.from_numpy(pooled), visual, torch.arange(states.shape[1])
                     ).sample.numpy()


def _dequantized(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Every tensor of the GGUF `path` as gguf-py reads and dequantizes it (not our reader)."""
    import gguf

    reader = gguf.GGUFReader(path)
    return {t.name: torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type),
                                               np.float32).reshape(shapes[t.name]))
            for t in reader.tensors}


@pytest.mark.parametrize("kind", ["q8_0", "q4_k"])
def test_gguf_kept_quantized(first_device: gpucore.Device, tmp_path: Path, kind: str) -> None:
    pytest.importorskip("gguf", reason="GGUF files need the gguf package")
    from diffusion.loaders.formats.gguf_write import write_gguf

    reference = tiny_kandinsky5_transformer(5, **QUANTIZABLE)
    tensors = state_dict(reference)
    path = tmp_path / f"kandinsky5lite_t2i-{kind.upper()}.gguf"
    counts = write_gguf(path, tensors.items(), kind, architecture="kandinsky5")
    assert counts.get(kind, 0) >= 10, counts
    assert kandinsky5_family(path) == "kandinsky-5"
    weights = load_kandinsky5_file(path)
    for name in ("model_dim", "ff_dim", "time_dim", "in_text_dim", "in_text_dim2"):
        assert weights.config[name] == QUANTIZABLE[name], name
    with deferred():
        ours = Kandinsky5Transformer3DModel(weights.config, device=first_device)
    load_component(ours, weights)
    block = ours.visual_transformer_blocks[0]
    for weight in (block.self_attention.to_query.weight, block.feed_forward.out_layer.weight,
                   block.visual_modulation.out_layer.weight):
        assert isinstance(weight, QuantizedTensor) and weight.format == kind

    rng = np.random.default_rng(3)
    latents = rng.standard_normal((1, 1, 6, 10, 4)).astype(np.float32)
    states = rng.standard_normal((1, 5, 256)).astype(np.float32)
    pooled = rng.standard_normal((1, 256)).astype(np.float32)
    got = ours(asarray(latents, device=first_device), 500.0, ours.text(states), pooled).numpy()
    exact = _velocity(reference, latents, states, pooled, 500.0)
    reference.load_state_dict(_dequantized(path, {k: v.shape for k, v in tensors.items()}))
    assert_close(got, _velocity(reference, latents, states, pooled, 500.0), tol=TOL)
    error = np.linalg.norm(got - exact) / np.linalg.norm(exact)
    assert 0 < error < NEAR[kind], error  # quantized, and only as far off as its bits


@pytest.mark.nodevice
@pytest.mark.parametrize("form", ["fp8_e4m3fn", "fp8_scaled"])
def test_float8_files_read_as_their_values(tmp_path: Path, form: str) -> None:
    """ComfyUI's `*_fp8_e4m3fn.safetensors` (the matrices float8, the rest as saved) and
    `*_fp8_scaled.safetensors` (float8 at absmax / 448 with a float32 scale_weight each, the
    scaled_fp8 marker), under model.diffusion_model.: each tensor the value it stands for."""
    from t5_files import scaled_fp8

    reference = tiny_kandinsky5_transformer(6)
    prefix = "model.diffusion_model."
    state = reference.state_dict()
    if form == "fp8_scaled":
        stored, held = scaled_fp8(state, prefix)
    else:
        stored = {prefix + k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v
                  for k, v in state.items()}
        held = {k: v.to(torch.float8_e4m3fn).float().numpy() if v.ndim == 2 else v.numpy()
                for k, v in state.items()}
    path = tmp_path / f"kandinsky5lite_t2i_{form}.safetensors"
    save_file(stored, str(path))
    assert kandinsky5_family(path) == "kandinsky-5"
    weights = load_kandinsky5_file(path)
    assert set(weights) == set(held)
    for key, value in held.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    name = "visual_transformer_blocks.0.self_attention.to_query.weight"
    assert not np.array_equal(held[name], state[name].numpy())  # float8 did round them
    for name, value in KANDINSKY5_TINY.items():
        if name != "attention_type":
            assert weights.config[name] == value, name
