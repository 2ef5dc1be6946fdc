"""FLUX.2's memory modes on a tiny klein folder: --medvram, --lowvram and --max-vram each give
the plain run's picture bitwise (--lowvram through the command line too), the networks loaded
straight to host memory (the text encoder gone before the transformer loads) and brought in
as they run; a budget below the least names that minimum in one line."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
from PIL import Image
from support import generate_within_budget

import diffusion.cli.main as cli
import gpucore
from diffusion.pipelines.flow.flux2_memory import smallest_flux2_budget
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.sd.memory import MemoryMode
from gpustd.nn.offload import is_offloaded

FILES = ("txt2img", "--prompt", "a red circle", "--width", "24", "--height", "16", "--steps",
         "2", "--sampler", "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32")


@pytest.fixture(scope="module")
def klein(tiny_flux2_klein: tuple[Path, Any]) -> Path:
    return tiny_flux2_klein[0]


def _picture(capsys: pytest.CaptureFixture[str], folder: Path, out: Path, *flags: str
             ) -> np.ndarray:
    code = cli.main([*FILES, "--model", str(folder), *flags, "--out", str(out)])
    printed, err = capsys.readouterr()
    assert code == 0, err
    with Image.open(printed.strip()) as image:
        return np.asarray(image.convert("RGB"))


def test_memory_modes_keep_the_picture(first_device: gpucore.Device, klein: Path,
                                       tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Loaded with `offload`, every network is in host memory until it runs; under
    --lowvram the transformer's blocks come and go one at a time, its embedders stay; under
    --medvram the networks take turns; under a budget 1 MiB above the least, units leave and
    come back within a generation; each picture the plain mode's. A budget below the least
    names it in one line."""
    gc.collect()  # the budget is the device's: what other tests left on it counts too
    first_device.empty_pool()
    held = first_device.memory_stats().allocated
    model = load_pipeline(klein, device=first_device, offload=True)
    try:
        plain = _modes_on(model, held)
    finally:  # a budget left set would fail every later test of the session's device
        model.set_memory_mode(MemoryMode())
    # the command line: --lowvram loads to host memory and streams, the same picture
    np.testing.assert_array_equal(_picture(capsys, klein, tmp_path / "low.png", "--lowvram"),
                                  np.asarray(plain))


def _modes_on(model: Any, held: int) -> Any:
    """The plain picture, after checking each mode's against it (the test's doc)."""
    pipe = model.pipe
    assert all(is_offloaded(n) for n in (pipe.text_encoder, pipe.transformer, pipe.vae))
    settings = {"prompt": "a red circle", "width": 24, "height": 16, "steps": 2, "seed": 7,
                "sampler": "diffusers", "rng": "torch", "cfg_scale": 1.0}  # as FILES
    model.set_memory_mode(MemoryMode(lowvram=True))
    assert model.memory_mode == MemoryMode(lowvram=True)
    assert not is_offloaded(pipe.transformer.x_embedder)
    pictures = {"lowvram": model.generate(**settings).images[0]}
    plan = model._memory
    assert plan.residency.uploaded > 0 and plan.residency.evictions > 0
    blocks = [*pipe.transformer.transformer_blocks, *pipe.transformer.single_transformer_blocks]
    assert sum(not is_offloaded(b) for b in blocks) <= 1
    model.set_memory_mode(MemoryMode())
    assert model.memory_mode is None
    assert not any(is_offloaded(n) for n in (pipe.text_encoder, pipe.transformer, pipe.vae))
    plain = model.generate(**settings).images[0]
    model.set_memory_mode(MemoryMode(medvram=True))
    pictures["medvram"] = model.generate(**settings).images[0]
    assert is_offloaded(pipe.text_encoder) and is_offloaded(pipe.transformer)  # the VAE ran
    least = smallest_flux2_budget(pipe)
    pictures["max_vram"] = generate_within_budget(model, held + least, 1 << 20, **settings)
    assert model._memory.residency.evictions > 0
    for mode, picture in pictures.items():
        np.testing.assert_array_equal(np.asarray(picture), np.asarray(plain), err_msg=mode)
    with pytest.raises(ValueError, match=f"needs at least {least / (1 << 30):.3f} GiB") as info:
        model.set_memory_mode(MemoryMode(max_vram=least - 1))
    assert "\n" not in str(info.value)
    return plain


def test_server_loads_one_network_at_a_time(first_device: gpucore.Device, klein: Path) -> None:
    """The server's loader under a memory mode loads FLUX.2 straight to host memory, tensor
    by tensor: the load takes no GPU memory for any of the three networks (before, each went
    to the GPU whole and back, so a network larger than the GPU could not load)."""
    from diffusion.server.jobs.loader import PipelineLoader
    from diffusion.server.settings import ServerSettings
    from gpustd.nn.offload import parameter_bytes

    gc.collect()
    first_device.empty_pool()
    held = first_device.memory_stats().allocated
    first_device.reset_peak_memory()
    loader = PipelineLoader(ServerSettings(dtype="float32", memory=MemoryMode(medvram=True)))
    model = loader(klein, device=first_device)
    try:
        peak = first_device.memory_stats().peak_allocated - held
        pipe = model.pipe
        sizes = [parameter_bytes(n) for n in (pipe.text_encoder, pipe.transformer, pipe.vae)]
        assert peak < min(sizes)  # 0 bytes here
        assert model.memory_mode == MemoryMode(medvram=True)
    finally:
        model.set_memory_mode(MemoryMode())
