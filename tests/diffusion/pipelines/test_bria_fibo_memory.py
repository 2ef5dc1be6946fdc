"""The memory modes of Bria FIBO (and FIBO Edit) and Bria FIBO 2 (txt2img, and its edit:
Qwen3-VL's vision tower in the text unit) on tiny folders, the edits' pictures through the
VAE's encoder: loaded with `offload` every network is in host memory until it runs;
--lowvram, --medvram and --max-vram each give the plain run's picture bitwise; under
--lowvram the GPU holds one block of the transformer at a time (FIBO's blocks each read a
SmolLM3 state computed before the transformer runs, so SmolLM3 leaves), its weights there
fewer than the model's."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
from bria_fibo2_tiny import tiny_fibo2_pipeline
from bria_fibo_tiny import tiny_fibo_edit_pipeline, tiny_fibo_pipeline
from PIL import Image
from support import generate_within_budget

import gpucore
from diffusion.pipelines.flow.flow_memory import smallest_flow_budget
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.observer import Observer
from diffusion.pipelines.sd.memory import MemoryMode
from gpustd.nn.offload import device_bytes, is_offloaded, parameter_bytes

PICTURE = Image.fromarray(np.random.default_rng(1).integers(0, 60, (30, 44, 3), np.uint8))
# (writer, folder, the request beyond the prompt: CFG so that both prompts are read)
FAMILIES = {
    "bria-fibo": (tiny_fibo_pipeline, "fibo", {}),
    "bria-fibo-edit": (tiny_fibo_edit_pipeline, "fibo-edit",
                       {"init_image": PICTURE,
                        "prompt": '{"edit_instruction": "make it night"}'}),
    "bria-fibo2": (tiny_fibo2_pipeline, "fibo2", {}),
    "bria-fibo2-edit": (tiny_fibo2_pipeline, "fibo2",
                        {"init_image": PICTURE, "prompt": "make it night"}),
}


class _Resident(Observer):
    """The bytes of the networks' weights on the GPU at the end of each step."""

    def __init__(self, networks: list[Any]) -> None:
        self.networks, self.resident = networks, []

    def on_step(self, done: int, total: int, latents: np.ndarray) -> None:
        self.resident.append(sum(device_bytes(n) for n in self.networks))


@pytest.mark.parametrize("case", list(FAMILIES))
def test_memory_modes_keep_the_picture(first_device: gpucore.Device, case: str,
                                       tmp_path: Path) -> None:
    write, name, extra = FAMILIES[case]
    write(tmp_path)
    gc.collect()  # the budget is the device's: what other tests left on it counts too
    first_device.empty_pool()
    held = first_device.memory_stats().allocated
    model = load_pipeline(tmp_path / name, device=first_device, offload=True)
    assert model.capabilities.memory_modes
    pipe = model.pipe
    networks = [pipe.text_encoder, *[v for v in [getattr(pipe, "vision", None)] if v],
                pipe.transformer, pipe.vae]
    assert all(is_offloaded(n) for n in networks)
    settings = {"prompt": '{"short_description": "a red circle"}',
                "negative_prompt": "a blue square", "width": 32, "height": 16, "steps": 2,
                "seed": 7, "sampler": "diffusers", "rng": "torch", "cfg_scale": 4.0, **extra}
    try:
        model.set_memory_mode(MemoryMode(lowvram=True))
        watch = _Resident(networks)
        pictures = {"lowvram": model.generate(observer=watch, **settings).images[0]}
        assert model._memory.residency.evictions > 0
        layout = model.memory_layout()
        blocks = layout.streamed()
        assert sum(not is_offloaded(b) for b in blocks) <= 1 < len(blocks)
        # the weights on the GPU as the steps end: the transformer's fixed parts and a block
        assert 0 < max(watch.resident) < parameter_bytes(pipe.transformer)
        assert not is_offloaded(layout.fixed())
        model.set_memory_mode(MemoryMode(medvram=True))
        pictures["medvram"] = model.generate(**settings).images[0]
        assert is_offloaded(pipe.text_encoder) and is_offloaded(pipe.transformer)  # VAE ran
        least = smallest_flow_budget(layout)
        pictures["max_vram"] = generate_within_budget(model, held + least, 1 << 18, **settings)
        assert model._memory.residency.evictions > 0
        model.set_memory_mode(MemoryMode())
        assert not any(is_offloaded(n) for n in networks)
        plain = model.generate(**settings).images[0]
        assert plain.std() > 2  # a picture, not a flat field
        for mode, picture in pictures.items():
            np.testing.assert_array_equal(picture, plain, err_msg=mode)
    finally:  # a budget left set would fail every later test of the session's device
        model.set_memory_mode(MemoryMode())
