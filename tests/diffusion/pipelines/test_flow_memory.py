"""The memory modes of Qwen-Image, Qwen-Image-Edit, Qwen-Image 2.1, Z-Image (and Omni), Krea 2,
Lumina 2, LongCat-Image (and Edit), Ovis-Image, Sana (and Sprint), HunyuanImage 2.1, Kandinsky
5, FLUX.1, SD3, HiDream-I1, Chroma, PixArt-Σ and Bria 3.2 on tiny folders: loaded with `offload`
every network is in host memory until it runs; --lowvram, --medvram and --max-vram each give the
plain run's picture bitwise; under --lowvram the GPU holds a block of the transformer at a
time, its weights there fewer than the model's; a budget below the least names that minimum in
one line. (FLUX.2's, the same plan: test_flux2_memory.)"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
from auraflow_tiny import tiny_auraflow_pipeline
from bria_tiny import tiny_bria_pipeline
from ernie_image_tiny import tiny_ernie_pipeline
from flow_tiny import tiny_chroma_pipeline, tiny_flux_pipeline, tiny_sd3_pipeline
from hidream_pipe_tiny import SIDE, tiny_hidream_pipeline
from hunyuanimage_parts_tiny import tiny_hunyuanimage_pipeline
from joyimage_tiny import tiny_joyimage_pipeline
from kandinsky5_text_tiny import tiny_kandinsky5_pipeline
from krea2_tiny import tiny_krea2_pipeline
from longcat_image_tiny import tiny_longcat_edit_pipeline, tiny_longcat_pipeline
from lumina2_pipeline_tiny import tiny_lumina2_pipeline
from nucleus_tiny import tiny_nucleus_pipeline
from ovis_image_tiny import tiny_ovis_pipeline
from PIL import Image
from pixart_tiny import tiny_pixart_pipeline
from prx_tiny import tiny_prx_pipeline
from qwenedit_tiny import tiny_qwenimage_edit_pipeline
from qwenimage21_tiny import tiny_qwenimage21_pipeline
from qwenimage_tiny import tiny_qwenimage_pipeline
from sana_pipeline_tiny import tiny_sana_pipeline
from support import generate_within_budget
from zimage_tiny import tiny_zimage_omni_pipeline, tiny_zimage_pipeline

import gpucore
from diffusion.pipelines.flow.flow_memory import smallest_flow_budget
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.observer import Observer
from diffusion.pipelines.sd.memory import MemoryMode
from gpustd import asarray
from gpustd.nn.offload import device_bytes, is_offloaded, parameter_bytes

PICTURE = Image.fromarray(np.random.default_rng(1).integers(0, 60, (60, 100, 3), np.uint8))
# (writer, folder, the request beyond the prompt: CFG so that both prompts are read; room
# over the least --max-vram for the activations, small enough that units must leave)
FAMILIES = {
    "qwen-image": (tiny_qwenimage_pipeline, "qwen-image", {"cfg_scale": 4.0}, 1 << 20),
    "qwen-image-edit": (tiny_qwenimage_edit_pipeline, "qwen-edit",
                        {"cfg_scale": 4.0, "init_image": PICTURE}, 1 << 20),
    # 2.1: the prompt's prefix runs the blocks (`prefix`) outside forward, once a prompt; its
    # sides are multiples of 32
    "qwen-image-2.1": (tiny_qwenimage21_pipeline, "qwen-image-2.1",
                       {"cfg_scale": 4.0, "width": 64, "height": 32}, 1 << 18),
    "z-image": (tiny_zimage_pipeline, "z-image-turbo", {"cfg_scale": 2.0}, 1 << 18),
    # Omni: SigLIP2's tower in the text unit, a condition picture encoded by the VAE (64
    # pixels a side, the least it reads)
    "z-image-omni": (tiny_zimage_omni_pipeline, "z-image-omni",
                     {"cfg_scale": 2.0, "init_image": PICTURE, "width": 64, "height": 64},
                     1 << 18),
    # Krea 2: its text fusion runs once a prompt (`text`), its blocks streamed with the rest
    "krea-2": (tiny_krea2_pipeline, "krea-2", {"cfg_scale": 4.0}, 1 << 18),
    # Lumina 2: Gemma 2, the refiners and joint blocks streamed; its sides multiples of 16
    "lumina2": (tiny_lumina2_pipeline, "lumina-2",
                {"cfg_scale": 4.0, "width": 48, "height": 32}, 1 << 18),
    # Sana: Gemma 2 over the instruction and prompt, the blocks streamed, the DC-AE; its
    # sides multiples of 32. Sprint: its SCM steps, no negative pass (CFG 1)
    "sana": (tiny_sana_pipeline, "sana", {"cfg_scale": 4.5, "width": 64, "height": 32},
             1 << 20),
    "sana-sprint": (lambda root: tiny_sana_pipeline(root, "sana-sprint", sprint=True),
                    "sana-sprint", {"cfg_scale": 1.0, "width": 64, "height": 32}, 1 << 18),
    # HunyuanImage 2.1: Qwen2.5-VL and ByT5 in one unit, APG-mix guidance with a negative
    # pass (its sides multiples of the tiny VAE's 4)
    "hunyuanimage-2.1": (tiny_hunyuanimage_pipeline, "hunyuanimage", {"cfg_scale": 3.5},
                         1 << 18),
    # Kandinsky 5: two text encoders (Qwen2.5-VL and CLIP) in one unit
    "kandinsky-5": (tiny_kandinsky5_pipeline, "kandinsky5", {"cfg_scale": 3.5}, 1 << 18),
    # FLUX.1 dev: diffusers' loop runs at CFG 1 (the distilled guidance); TeaCache measures
    # the first block's modulated input, which must bring the block in too
    "flux": (lambda root: tiny_flux_pipeline(root, dev=True), "flux",
             {"cfg_scale": 1.0, "cache": "teacache"}, 1 << 20),
    "sd3": (tiny_sd3_pipeline, "sd3", {"cfg_scale": 4.0}, 1 << 20),
    # HiDream-I1: two CLIPs, T5 and Llama in one unit; the blocks inside their wrappers
    # stream (the tiny transformer's 8 x 8 latents at most)
    "hidream": (tiny_hidream_pipeline, "hidream",
                {"cfg_scale": 4.0, "width": SIDE, "height": SIDE}, 1 << 18),
    # Chroma's T5 and blocks are small beside its VAE: room for the decode's activations only
    "chroma": (tiny_chroma_pipeline, "chroma", {"cfg_scale": 4.0}, 1 << 18),
    # Bria 3.2: FLUX.1's blocks, T5 the text unit
    "bria": (tiny_bria_pipeline, "bria", {"cfg_scale": 4.0}, 1 << 18),
    # LongCat-Image: FLUX.1's double and single blocks, Qwen2.5-VL the text unit
    "longcat-image": (tiny_longcat_pipeline, "longcat-image", {"cfg_scale": 4.0}, 1 << 18),
    # LongCat-Image-Edit: the vision tower in the text unit, the picture's latent tokens
    "longcat-image-edit": (tiny_longcat_edit_pipeline, "longcat-edit",
                           {"cfg_scale": 4.0, "init_image": PICTURE}, 1 << 20),
    # Ovis-Image: FLUX.1's blocks with SwiGLU MLPs, Qwen3 the text unit
    "ovis-image": (tiny_ovis_pipeline, "ovis-image", {"cfg_scale": 4.0}, 1 << 18),
    # NucleusMoE-Image: dense and mixture-of-experts blocks streamed, Qwen3-VL the text unit
    "nucleus-moe": (tiny_nucleus_pipeline, "nucleus-moe", {"cfg_scale": 4.0}, 1 << 18),
    # ERNIE-Image: Mistral the text unit, the shared-adaLN blocks streamed, FLUX.2's VAE
    "ernie-image": (tiny_ernie_pipeline, "ernie-image", {"cfg_scale": 4.0}, 1 << 18),
    # PixArt-Σ: T5 the text unit (300 tokens), its blocks streamed, the SD VAE
    "pixart": (tiny_pixart_pipeline, "pixart", {"cfg_scale": 4.5}, 1 << 18),
    # AuraFlow: joint then single blocks streamed, UMT5 the text unit, SDXL's VAE
    "auraflow": (tiny_auraflow_pipeline, "auraflow", {"cfg_scale": 4.0}, 1 << 18),
    # PRX: T5Gemma's encoder the text unit, the single-stream blocks streamed, FLUX.1's VAE
    "prx": (tiny_prx_pipeline, "prx", {"cfg_scale": 4.0}, 1 << 18),
    # JoyImage Edit: Qwen3-VL and its vision tower one unit, the double blocks streamed
    "joyimage-edit": (tiny_joyimage_pipeline, "joyimage",
                      {"cfg_scale": 4.0, "init_image": PICTURE, "width": 32}, 1 << 20),
}


def _networks(pipe: Any) -> list[Any]:
    # Qwen-Image-Edit's and Z-Image Omni's towers move with their encoders; FLUX.1's T5 and
    # SD3's with the CLIPs
    more = [getattr(pipe, name, None)
            for name in ("vision", "siglip", "text_encoder_2", "text_encoder_3",
                         "text_encoder_4")]
    text = [encoder for encoder, _ in getattr(pipe, "clips", ())] or [pipe.text_encoder]
    return [*text, *(n for n in more if n is not None), pipe.transformer, pipe.vae]


class _Resident(Observer):
    """The bytes of the networks' weights on the GPU at the end of each step."""

    def __init__(self, networks: list[Any]) -> None:
        self.networks, self.resident = networks, []

    def on_step(self, done: int, total: int, latents: np.ndarray) -> None:
        self.resident.append(sum(device_bytes(n) for n in self.networks))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_memory_modes_keep_the_picture(first_device: gpucore.Device, family: str,
                                       tmp_path: Path) -> None:
    """The test's doc, for each family."""
    write, name, extra, room = FAMILIES[family]
    write(tmp_path)
    gc.collect()  # the budget is the device's: what other tests left on it counts too
    first_device.empty_pool()
    held = first_device.memory_stats().allocated
    model = load_pipeline(tmp_path / name, device=first_device, offload=True)
    assert model.family.startswith(family) and model.capabilities.memory_modes
    pipe = model.pipe
    if family == "qwen-image-edit":
        pipe.reference_area = 64 * 96  # diffusers' megapixel would be slow here
    if family == "longcat-image-edit":
        pipe.area = 64 * 96
    if family in ("flux", "sd3"):  # T5's attention over 512 / 256 tokens would outgrow the room
        model.max_sequence_length = 32
    settings = {"prompt": "a red circle", "negative_prompt": "a blue square", "width": 24,
                "height": 16, "steps": 2, "seed": 7, "sampler": "diffusers", "rng": "torch",
                **extra}
    assert all(is_offloaded(n) for n in _networks(pipe))
    try:
        model.set_memory_mode(MemoryMode(lowvram=True))
        watch = _Resident(_networks(pipe))
        pictures = {"lowvram": model.generate(observer=watch, **settings).images[0]}
        residency = model._memory.residency
        assert residency.uploaded > 0 and residency.evictions > 0
        layout = model.memory_layout()
        blocks = layout.streamed()
        assert sum(not is_offloaded(b) for b in blocks) <= 1 < len(blocks)
        # the weights on the GPU as the steps end: the transformer's fixed parts and a block
        assert 0 < max(watch.resident) < parameter_bytes(pipe.transformer)
        assert not is_offloaded(layout.fixed())  # embedders, output layers (pad tokens) stay
        model.set_memory_mode(MemoryMode())
        assert model.memory_mode is None
        assert not any(is_offloaded(n) for n in _networks(pipe))
        plain = model.generate(**settings).images[0]
        assert plain.std() > 2  # a picture, not a flat field
        model.set_memory_mode(MemoryMode(medvram=True))
        pictures["medvram"] = model.generate(**settings).images[0]
        assert is_offloaded(_networks(pipe)[0]) and is_offloaded(pipe.transformer)  # VAE ran
        least = smallest_flow_budget(model.memory_layout())
        pictures["max_vram"] = generate_within_budget(model, held + least, room, **settings)
        assert model._memory.residency.evictions > 0
        for mode, picture in pictures.items():
            np.testing.assert_array_equal(picture, plain, err_msg=mode)
        with pytest.raises(ValueError, match=f"needs at least {least / (1 << 30):.3f} GiB"
                           ) as info:
            model.set_memory_mode(MemoryMode(max_vram=least - 1))
        assert "\n" not in str(info.value)
    finally:  # a budget left set would fail every later test of the session's device
        model.set_memory_mode(MemoryMode())



def test_networks_loaded_to_the_gpu_leave_inside_a_capture(first_device: gpucore.Device,
                                                           tmp_path: Path) -> None:
    """Z-Image loaded to the GPU (no weight ever left it) under --max-vram: its VAE decode
    recorded in a capture outgrows the budget, so the text encoder and transformer blocks
    leave inside the capture, which reads nothing back (the plan took their host copies as
    it was set). The decode and its replay are the plain decode bitwise, within the budget;
    so are the pictures of generations at a tight budget and a loose one."""
    tiny_zimage_pipeline(tmp_path)
    gc.collect()
    first_device.empty_pool()
    held = first_device.memory_stats().allocated
    model = load_pipeline(tmp_path / "z-image-turbo", device=first_device)
    pipe, layout = model.pipe, model.memory_layout()
    settings = {"prompt": "a red circle", "negative_prompt": "a blue square", "width": 24,
                "height": 16, "steps": 2, "seed": 7, "sampler": "diffusers", "rng": "torch",
                "cfg_scale": 2.0}
    assert not any(is_offloaded(n) for n in _networks(pipe))
    z = asarray(np.random.default_rng(4).standard_normal((1, 4, 16, 16)), device=first_device,
                dtype=pipe.vae.decoder.conv_in.weight.dtype)
    decoded = pipe.vae.decode(z).numpy()
    plain = model.generate(**settings).images[0]
    first_device.empty_pool()
    first_device.reset_peak_memory()
    with first_device.capture() as graph:  # what the capture itself holds: its peak
        pipe.vae.decode(z)
    graph.release()
    budget = first_device.memory_stats().peak_allocated - parameter_bytes(pipe.text_encoder) // 2
    try:
        for _attempt in range(12):  # up to what the capture needs with the units gone
            model.set_memory_mode(MemoryMode(max_vram=budget))
            first_device.reset_peak_memory()
            try:
                with first_device.capture() as graph:
                    out = pipe.vae.decode(z)
                break
            except gpucore.MemoryLimitError as error:  # (on an H200 six steps of 64 KiB were
                budget = max(budget, error.needed) + (1 << 18)  # not enough)
        else:
            pytest.fail(f"the decode's capture did not fit {budget} bytes in 12 tries")
        residency = model._memory.residency
        assert residency.evictions > 0 and is_offloaded(pipe.text_encoder)
        assert first_device.memory_stats().peak_reserved <= budget
        np.testing.assert_array_equal(out.numpy(), decoded)
        graph.replay()
        np.testing.assert_array_equal(out.numpy(), decoded)
        graph.release()
        del out, z, graph  # what `held` does not count: the tight budget would decode in tiles
        gc.collect()
        least = smallest_flow_budget(layout)
        pictures = {"tight": generate_within_budget(model, held + least, 1 << 18, **settings),
                    "loose": generate_within_budget(model, budget, 0, **settings)}
        for name, picture in pictures.items():
            np.testing.assert_array_equal(picture, plain, err_msg=name)
    finally:
        model.set_memory_mode(MemoryMode())
