"""ControlNet units on the flow families under the memory modes (a tiny FLUX.1 dev with a
tiny Union ControlNet here; Z-Image's Fun Union 2.1, whose blocks run inside the
transformer's call, in test_zimage_controlnet by `check_units_under_the_memory_modes`):
--lowvram, --medvram and --max-vram each give the plain run's picture bitwise, the unit
visibly matters; under --lowvram at most one block, the transformer's or the ControlNet's, is
on the GPU as each step ends; after the run the ControlNet is in host memory and no unit of
the plan, and the plain mode brings it back (loaded straight to host memory, as the CLI
loads it under a mode); a budget too small for the ControlNet is refused
in one line. With the hires fix the units guide the second pass at its size."""

from __future__ import annotations

import gc
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
from control_tiny import circle
from test_flux_controlnet import tiny_flux_controlnet

import gpucore
from diffusion.loaders.control.catalog import load_control_model
from diffusion.pipelines.control import ControlUnit
from diffusion.pipelines.control_map import ControlMap
from diffusion.pipelines.flow.flow_hires import stage_control
from diffusion.pipelines.flow.flow_memory import smallest_flow_budget
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.observer import Observer
from diffusion.pipelines.request import GenerationRequest
from diffusion.pipelines.sd.memory import MemoryMode
from diffusion.upscalers.interpolation import HiresFix, upscale_image
from gpustd.nn import ModuleList
from gpustd.nn.offload import device_bytes, is_offloaded, parameter_bytes

WIDTH, HEIGHT = 32, 16


def _controlnet_blocks(model: Any) -> list[Any]:
    return [block for value in vars(model).values() if isinstance(value, ModuleList)
            for block in value]


class _Blocks(Observer):
    """How many blocks (the transformer's and the ControlNet's) are on the GPU as each step
    ends, and the ControlNet's bytes there."""

    def __init__(self, blocks: list[Any], controlnet: Any) -> None:
        self.blocks, self.controlnet = blocks, controlnet
        self.resident: list[int] = []
        self.controlnet_bytes: list[int] = []

    def on_step(self, done: int, total: int, latents: np.ndarray) -> None:
        self.resident.append(sum(not is_offloaded(b) for b in self.blocks))
        self.controlnet_bytes.append(device_bytes(self.controlnet))


def _flux(root: Path, folder: Path, device: gpucore.Device, *, offload: bool = True
          ) -> tuple[Any, Any, dict[str, Any]]:
    tiny_flux_controlnet(folder / "cn", union=True, scale=1.0)
    model = load_pipeline(root / "flux", device=device, offload=offload)
    model.max_sequence_length = 16  # T5's 512 tokens would outgrow the tiny budget's room
    # as the CLI loads it for a model under a memory mode: straight to host memory
    controlnet = load_control_model(folder / "cn", device=device, to_host=offload)
    assert device_bytes(controlnet) == (0 if offload else parameter_bytes(controlnet))
    return model, controlnet, {
        "union_mode": 2, "settings": {"distilled_cfg_scale": 2.5, "cfg_scale": 1.0}}


def check_units_under_the_memory_modes(model: Any, controlnet: Any, request: GenerationRequest,
                                       *, held: int | None = None) -> None:
    """The module doc's checks for `model` (loaded with `offload`) running `request`, whose one
    unit runs `controlnet`; `held`: the device's allocated bytes before the model loaded, to
    check --max-vram too (None: not)."""
    blocks = [*model.memory_layout().streamed(), *_controlnet_blocks(controlnet)]
    pictures = {}
    try:
        model.set_memory_mode(MemoryMode(lowvram=True))
        watch = _Blocks(blocks, controlnet)
        pictures["lowvram"] = model.generate(request, observer=watch).images[0]
        assert watch.resident and max(watch.resident) <= 1
        assert 0 < max(watch.controlnet_bytes) < parameter_bytes(controlnet)
        assert is_offloaded(controlnet) and controlnet not in model._memory.residency
        assert not any("forward" in vars(b) for b in _controlnet_blocks(controlnet))
        model.set_memory_mode(MemoryMode(medvram=True))
        pictures["medvram"] = model.generate(request).images[0]
        assert "forward" in vars(model.pipe.transformer)  # its own unit again
        if held is not None:  # the same plan as --lowvram's, the budget making room
            least = smallest_flow_budget(model.memory_layout())
            model.set_memory_mode(MemoryMode(
                max_vram=held + least + parameter_bytes(controlnet) + (1 << 20)))
            pictures["max_vram"] = model.generate(request).images[0]
            assert model._memory.residency.evictions > 0
            # a budget the model fits in but not its ControlNet's parts beside it
            need = smallest_flow_budget(model.memory_layout(), [controlnet])
            model.set_memory_mode(MemoryMode(max_vram=least))
            with pytest.raises(ValueError, match=f"needs at least {need / (1 << 30):.3f} GiB"
                               ) as info:
                model.generate(request)
            assert need > least and "\n" not in str(info.value)
        model.set_memory_mode(MemoryMode())
        plain = model.generate(request).images[0]  # the ControlNet back from host memory
        assert not is_offloaded(controlnet)
        for mode, picture in pictures.items():
            np.testing.assert_array_equal(picture, plain, err_msg=mode)
        without = model.generate(replace(request, control=())).images[0]
        assert np.abs(plain.astype(float) - without).mean() > 2  # the unit matters
    finally:  # a budget left set would fail every later test of the session's device
        model.set_memory_mode(MemoryMode())


def test_flux_controlnet_units_under_the_memory_modes(first_device: gpucore.Device,
                                                      tiny_flux_dev: tuple[Path, Any],
                                                      tmp_path: Path) -> None:
    """The module doc, for FLUX.1 dev with a Union ControlNet (Z-Image's: in
    test_zimage_controlnet, on its module's model)."""
    gc.collect()  # the budget is the device's: what other tests left on it counts too
    first_device.empty_pool()
    held = first_device.memory_stats().allocated
    model, controlnet, extra = _flux(tiny_flux_dev[0], tmp_path, first_device)
    unit = ControlUnit(controlnet, circle(HEIGHT, WIDTH), union_mode=extra["union_mode"])
    request = GenerationRequest(prompt="a red circle", width=WIDTH, height=HEIGHT, steps=2,
                                seed=7, sampler="Euler", control=(unit,), **extra["settings"])
    check_units_under_the_memory_modes(model, controlnet, request, held=held)


def test_controlnet_units_with_the_hires_fix(first_device: gpucore.Device,
                                            tiny_flux_dev: tuple[Path, Any],
                                            tmp_path: Path) -> None:
    """FLUX with a Union unit and the hires fix (an image upscaler): the picture of the two
    passes run by hand, txt2img and then img2img of the upscaled picture at the hires size
    with the unit (its map fitted to that size; 2 steps of 4 as the hires pass's 2 of a
    schedule stretched by 1 / 0.5), unlike that img2img without the unit: the second pass
    sees the control."""
    model, controlnet, extra = _flux(tiny_flux_dev[0], tmp_path, first_device, offload=False)
    unit = ControlUnit(controlnet, circle(40, 56), union_mode=2,
                       resize_mode="Resize and Fill")
    request = GenerationRequest(prompt="a red circle", width=16, height=16, steps=2,
                                seed=7, sampler="Euler", control=(unit,),
                                hr_distilled_cfg=3.5, **extra["settings"],
                                hires=HiresFix(scale=2.0, upscaler="Lanczos", steps=2,
                                               denoise=0.5))
    hires = model.generate(request).images[0]
    assert hires.shape == (32, 32, 3)
    first = model.generate(replace(request, hires=None)).images[0]
    second = replace(request, hires=None, width=32, height=32, steps=4,
                     init_image=upscale_image(first, (32, 32), "Lanczos"),
                     strength=0.25, distilled_cfg_scale=3.5)
    np.testing.assert_array_equal(hires, model.generate(second).images[0])
    unguided = model.generate(replace(second, control=())).images[0]
    assert np.abs(hires.astype(float) - unguided).mean() > 2


@pytest.mark.nodevice
def test_hires_passes_take_the_units_their_hr_option_names() -> None:
    """"Low res only" units guide the first pass alone, "High res only" ones the second;
    Flux Tools' map (no choice: "Both") both."""
    both, low, high = (SimpleNamespace(hr_option=option) for option in (
        "Both", "Low res only", "High res only"))
    control = (both, low, high, ControlMap(np.zeros((8, 8, 3), np.uint8)))
    assert stage_control(control, "first") == (both, low, control[3])
    assert stage_control(control, "second") == (both, high, control[3])
