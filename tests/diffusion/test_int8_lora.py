"""LoRAs under `--int8` (the SD UNet's in test_int8.py): a tiny FLUX.1 dev's prompt LoRA on its
W8A8 layers, smoothed from a calibration step that ran with the LoRA, near our float picture
with the same LoRA; the request after it, without the LoRA, the plain int8 picture bit for
bit. Int8Weight.requantized: a layer's own values back on its own grid, under its smoothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from conftest import host_variant_on_first_adapter
from safetensors.numpy import save_file

import gpucore
from diffusion import load_pipeline
from diffusion.models.int8 import targets
from diffusion.pipelines.int8 import use_int8
from gpustd import Tensor
from gpustd.nn.int8_linear import quantize_weights


def test_requantized_keeps_the_grid_and_the_smoothing(device: gpucore.Device) -> None:
    host_variant_on_first_adapter(device, "the int8 requantization")
    rng = np.random.default_rng(8)
    dtype = np.float16 if device.has_f16 else np.float32
    floats = [rng.standard_normal((n, 21)).astype(dtype) for n in (7, 12)]
    act = np.abs(rng.standard_normal(21)).astype(np.float32) * 10
    for ranges in (None, act):
        q, k = quantize_weights([Tensor.from_numpy(w, device=device) for w in floats],
                                act_absmax=ranges)
        words, scales = k.requantized(k.dequantize())
        assert np.array_equal(words, k.raw()[0])  # its own values: the same int8
        np.testing.assert_allclose(scales, k.raw()[1], rtol=1e-6)
        moved = floats[1].astype(np.float64) + rng.standard_normal((12, 21)) * 0.1
        for t in (k.words, k.scales):  # a memory mode's unit: host copies taken
            t.buffer.host_copy = t.buffer.read()
        k.replace(*k.requantized(moved))
        for t in (k.words, k.scales):  # a LoRA's merge keeps them: no read-back to evict
            np.testing.assert_array_equal(t.buffer.host_copy, t.buffer.read())
        step = np.abs(moved / (k.smooth.numpy() if k.smooth is not None else 1)).max(1) / 127
        smooth = k.smooth.numpy() if k.smooth is not None else np.ones(21)
        # within half a step of its row's scale (in the smoothed space) of the new values
        assert (np.abs((k.dequantize() - moved) / smooth) <= step[:, None] * 0.5001).all()
        assert k.smooth is q.smooth  # still one quantization of their input


def _lora(transformer: Any, folder: Path, scale: float = 0.5) -> None:
    """A PEFT LoRA (rank 2, random) of every W8A8 layer of `transformer`."""
    rng = np.random.default_rng(5)
    state = {}
    for key, layer in targets(transformer):
        out, width = layer.weight.shape
        state[f"transformer.{key}.lora_A.weight"] = (
            rng.standard_normal((2, width)) * scale / np.sqrt(width)).astype(np.float32)
        state[f"transformer.{key}.lora_B.weight"] = (
            rng.standard_normal((out, 2)) * scale).astype(np.float32)
    save_file(state, str(folder / "tiny.safetensors"))


def test_flux_lora_under_int8_smooth(first_device: gpucore.Device,
                                     tiny_flux_dev: tuple[Path, Any], tmp_path: Path) -> None:
    root, _ = tiny_flux_dev
    pipe = load_pipeline(root / "flux", device=first_device)
    pipe.max_sequence_length = 16
    _lora(pipe.transformer, tmp_path)
    pipe.lora_dir = tmp_path
    settings = dict(seed=7, steps=2, width=24, height=16, cfg_scale=1.0)
    prompt, lora = "a red circle", "<lora:tiny:1>a red circle"

    def pixels(text: str, **changes: Any) -> np.ndarray:
        return pipe.generate(text, **{**settings, **changes}).images[0].astype(np.float64)

    want, want_lora = pixels(prompt), pixels(lora)
    # calibrated on a step with the LoRA patched into the float weights: taken off before
    # they are dropped, else every later picture would carry it
    note = use_int8(pipe, calibration=lambda: pixels(lora, steps=1))
    assert "17 linear layers of the transformer, smoothed" in note
    got = pixels(prompt)
    result = pipe.generate(lora, **settings)
    assert result.settings["lora_hashes"].startswith("tiny: ")
    assert result.settings["int8"] == "W8A8 SmoothQuant"
    with_lora = result.images[0].astype(np.float64)
    tolerance = 1.5  # of 255, mean (lavapipe: int8 0.7 off float, 0.34 with the LoRA)
    assert np.abs(got - want).mean() < tolerance
    assert np.abs(with_lora - want_lora).mean() < tolerance
    assert np.abs(with_lora - got).mean() > 8 * tolerance  # the LoRA matters (lavapipe: 19)
    assert np.array_equal(pixels(prompt), got)  # the plain int8 weights, restored
