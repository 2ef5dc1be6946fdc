"""Ideogram 4's memory modes on the tiny folder: loaded with `offload` every network is in
host memory until it runs; the unconditional transformer is placed as a ControlNet is (with
the transformer under --medvram, its blocks streamed among the transformer's under --lowvram
and --max-vram); every mode gives the plain run's picture bitwise."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
from ideogram4_tiny import tiny_ideogram4_pipeline
from support import generate_within_budget

import gpucore
from diffusion.pipelines.flow.flow_memory import smallest_flow_budget
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.sd.memory import MemoryMode
from gpustd.nn.offload import is_offloaded


def test_memory_modes_keep_the_picture(first_device: gpucore.Device, tmp_path: Path) -> None:
    tiny_ideogram4_pipeline(tmp_path)
    gc.collect()  # the budget is the device's: what other tests left on it counts too
    first_device.empty_pool()
    held = first_device.memory_stats().allocated
    model = load_pipeline(tmp_path / "ideogram4", device=first_device, offload=True)
    pipe = model.pipe
    networks = [pipe.text_encoder, pipe.transformer, pipe.unconditional_transformer, pipe.vae]
    assert all(is_offloaded(n) for n in networks)
    settings = {"prompt": "a red circle", "width": 24, "height": 16, "steps": 1, "seed": 7,
                "sampler": "diffusers", "rng": "torch", "cfg_scale": 3.0}
    try:
        model.set_memory_mode(MemoryMode(lowvram=True))
        pictures = {"lowvram": model.generate(**settings).images[0]}
        assert model._memory.residency.evictions > 0
        blocks = [*pipe.transformer.layers, *pipe.unconditional_transformer.layers]
        assert sum(not is_offloaded(b) for b in blocks) <= 1  # both models' blocks streamed
        model.set_memory_mode(MemoryMode(medvram=True))
        pictures["medvram"] = model.generate(**settings).images[0]
        assert is_offloaded(pipe.transformer) and is_offloaded(pipe.unconditional_transformer)
        least = smallest_flow_budget(model.memory_layout(), [pipe.unconditional_transformer])
        pictures["max_vram"] = generate_within_budget(model, held + least, 1 << 18, **settings)
        assert model._memory.residency.evictions > 0
        model.set_memory_mode(MemoryMode())
        plain = model.generate(**settings).images[0]
        assert plain.std() > 2  # a picture, not a flat field
        for mode, picture in pictures.items():
            np.testing.assert_array_equal(picture, plain, err_msg=mode)
    finally:  # a budget left set would fail every later test of the session's device
        model.set_memory_mode(MemoryMode())
