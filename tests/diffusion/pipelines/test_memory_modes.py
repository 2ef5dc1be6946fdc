"""The WebUI's memory modes (diffusion.pipelines.sd.memory): --medvram, --lowvram and --max-vram
give the plain run's picture bit for bit, and hold less device memory at their peak."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="builds the tiny test model (extra: reference)")
from sd_tiny import write_pipeline

import gpucore
from diffusion import load_pipeline
from diffusion.models.tiled_vae import decode_tiled
from diffusion.pipelines.sd.memory import MemoryMode, networks, parse_size, smallest_budget
from gpustd.nn.offload import device_bytes, parameter_bytes

SIZE = 16  # 8x8 latents


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pipeline(tmp_path_factory.mktemp("tiny-sd-memory"))


def _image(pipe: Any) -> np.ndarray:
    return pipe.txt2img("a lighthouse at dusk", negative_prompt="blurry", steps=1, seed=3,
                        width=SIZE, height=SIZE).images[0]


def _steady_peak(pipe: Any, device: gpucore.Device) -> tuple[np.ndarray, int]:
    """(picture, peak bytes allocated) of a second generation (the first records captures)."""
    _image(pipe)
    device.empty_pool()
    device.reset_peak_memory()
    return _image(pipe), device.memory_stats().peak_allocated


@pytest.fixture(scope="module")
def held(first_device: gpucore.Device) -> int:
    """Bytes the session's device holds for other modules' tests (their kept caches, garbage
    Python has not collected yet): the budget is the device's, so they count against it."""
    gc.collect()
    first_device.empty_pool()
    return first_device.memory_stats().allocated


@pytest.fixture(scope="module")
def pipe(first_device: gpucore.Device, model_dir: Path, held: int) -> Any:
    """One pipeline for the module's tests, measured after `held`."""
    return load_pipeline(model_dir, device=first_device)


@pytest.fixture(autouse=True)
def _no_mode_after(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test leaves the pipeline with no memory mode, a failed one included: a budget left
    set would fail every later test of the session's device."""
    yield
    if "pipe" in request.fixturenames:
        request.getfixturevalue("pipe").set_memory_mode(MemoryMode())


@pytest.fixture(scope="module")
def plain(first_device: gpucore.Device, pipe: Any) -> tuple[np.ndarray, int]:
    return _steady_peak(pipe, first_device)


def _half(plain: tuple[np.ndarray, int], held: int) -> int:
    """A budget of what the device holds already and half of the plain run's own peak."""
    return held + (plain[1] - held) // 2


def _weights(pipe: Any) -> int:
    return sum(parameter_bytes(m) for m in (pipe.text_encoder, pipe.unet, pipe.vae))


@pytest.mark.parametrize("mode, most", [
    (MemoryMode(medvram=True), 0.95),
    (MemoryMode(lowvram=True), 0.75),
])
def test_mode_gives_the_plain_picture_with_less_memory(
        first_device: gpucore.Device, pipe: Any, plain: tuple[np.ndarray, int], held: int,
        mode: MemoryMode, most: float) -> None:
    pipe.set_memory_mode(mode)
    image, peak = _steady_peak(pipe, first_device)
    np.testing.assert_array_equal(image, plain[0])
    assert peak - held <= most * (plain[1] - held), (mode.label, peak, plain[1], held)
    residency = pipe.memory.residency
    assert residency.uploaded > 0 and residency.evictions > 0
    # after the decode only the VAE (and the UNet's unstreamed rest) is on the device
    assert device_bytes(pipe.text_encoder) == 0
    pipe.set_memory_mode(MemoryMode())  # off again: everything back
    assert sum(device_bytes(m) for m in (pipe.text_encoder, pipe.unet, pipe.vae)) == _weights(pipe)


def test_budget_holds_at_the_peak(first_device: gpucore.Device, pipe: Any,
                                  plain: tuple[np.ndarray, int], held: int) -> None:
    """--max-vram is the device's limit at every allocation: the pool's reserve and each
    block's activations included, the generation never holds more than the budget."""
    budget = _half(plain, held)
    assert budget > held + smallest_budget(pipe)
    pipe.set_memory_mode(MemoryMode(max_vram=budget))
    image, _ = _steady_peak(pipe, first_device)
    np.testing.assert_array_equal(image, plain[0])
    assert first_device.memory_stats().peak_reserved <= budget
    assert pipe.memory.residency.evictions > 0
    pipe.set_memory_mode(MemoryMode())
    assert first_device.memory_limit.bytes is None


def test_budgets_on_a_pipeline_loaded_to_the_gpu(first_device: gpucore.Device,
                                                 tmp_path: Path) -> None:
    """bench lowvram --quick's SD 1.5 (wider than this module's) loaded to the GPU, under
    budgets of 3, 5 and 8 tenths of its plain run's peak (lavapipe: 5 and 9), each on a
    pipeline just loaded (no network has left the GPU): units leave, some of them while the
    text encoders' capture records, and none is read back there (the plan took the host
    copies as it was set; before, the never-moved VAE was: CaptureError). Every picture
    is the plain one bit for bit, but where the budget sent the decode to tiles: within the
    tiling's blending (an H200 at 5 tenths gave pixels a level off; the tiles the likely
    cause, not confirmed on a GPU yet)."""
    from bench import lowvram
    from diffusion.pipelines.sd import memory

    lowvram.MODELS["sd15"][2](tmp_path, True)
    gc.collect()
    first_device.empty_pool()
    before = first_device.memory_stats().allocated  # other tests' (the budget is the device's)
    dtype = np.float16 if first_device.has_f16 else np.float32
    pipe = load_pipeline(tmp_path, device=first_device, dtype=dtype)
    plain, _, stats = lowvram._measured(pipe, first_device, 64, 2)
    inside: list[bool] = []  # per eviction: whether a capture was recording
    # Two budgets on CI's 2 cores (15 s each), those where lavapipe's units leave while a
    # capture records: 5 and 9 tenths (3 and 8 before its direct GEMM and conv changed the
    # activations' sizes; measured: at 3-9 tenths only 5 and 9 evict inside a capture).
    for tenths in (5, 9) if first_device.info.type == "cpu" else (3, 5, 8):
        del pipe
        gc.collect()
        pipe = load_pipeline(tmp_path, device=first_device, dtype=dtype)
        try:
            pipe.set_memory_mode(MemoryMode(
                max_vram=before + (stats.peak_reserved - before) * tenths // 10))
            residency = pipe.memory.residency
            evict = residency.evict

            def counted(module: Any, evict: Any = evict) -> None:
                inside.append(first_device.capturing is not None)
                evict(module)

            residency.evict = counted  # type: ignore[method-assign]
            tiled: list[bool] = []
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(memory, "decode_tiled", lambda *a, tiled=tiled, **k: (
                    tiled.append(True) or decode_tiled(*a, **k)))
                image, _, _ = lowvram._measured(pipe, first_device, 64, 2)
            if tiled:  # the tiles' blending: a level here and there
                assert np.abs(image.astype(int) - plain).max() <= 2, f"{tenths} tenths"
            else:
                np.testing.assert_array_equal(image, plain, err_msg=f"{tenths} tenths")
            assert residency.evictions > 0
        finally:  # nothing of it left on the session's device: the module's budgets count that
            pipe.set_memory_mode(MemoryMode())
    del pipe
    gc.collect()
    first_device.empty_pool()
    assert any(inside)


def test_budget_replays_the_step_once_no_weight_moves(first_device: gpucore.Device,
                                                      pipe: Any,
                                                      plain: tuple[np.ndarray, int],
                                                      held: int) -> None:
    """Under a budget the UNet runs eagerly while its blocks move; once a step moved none,
    the next ones replay a capture: the same picture, and within a tight budget still."""
    settings = dict(negative_prompt="blurry", steps=4, seed=3, width=SIZE, height=SIZE)
    want = pipe.txt2img("a lighthouse at dusk", **settings).images[0]
    captured = pipe._unet_capture.captured
    for budget, replayed in ((parse_size("8G"), 2), (_half(plain, held), 0)):
        pipe.set_memory_mode(MemoryMode(max_vram=budget))
        first_device.reset_peak_memory()
        replays = captured.replays
        np.testing.assert_array_equal(
            pipe.txt2img("a lighthouse at dusk", **settings).images[0], want)
        # 8G: step 1 brings the blocks in, step 2 moves none (eager), 3 records, 4 replays
        assert captured.replays - replays >= replayed
        assert first_device.memory_stats().peak_reserved <= budget
    pipe.set_memory_mode(MemoryMode())


def test_budget_too_small_names_the_minimum(pipe: Any, plain: tuple[np.ndarray, int]) -> None:
    least = smallest_budget(pipe)
    with pytest.raises(ValueError, match=rf"at least .*\({-(-least // (1 << 20))} MiB\)"):
        pipe.set_memory_mode(MemoryMode(max_vram=least - 1))
    assert pipe.memory is None
    pipe.set_memory_mode(MemoryMode(max_vram=least))  # the weights fit, their activations not
    with pytest.raises(gpucore.MemoryLimitError, match="needs at least") as error:
        _image(pipe)
    assert error.value.needed > least
    pipe.set_memory_mode(MemoryMode())
    np.testing.assert_array_equal(_image(pipe), plain[0])  # nothing left half-done


def test_budget_that_fits_everything_moves_nothing(pipe: Any,
                                                  plain: tuple[np.ndarray, int]) -> None:
    pipe.set_memory_mode(MemoryMode(max_vram=parse_size("8G")))
    np.testing.assert_array_equal(_image(pipe), plain[0])
    assert pipe.memory.residency.evictions == 0
    pipe.set_memory_mode(MemoryMode())
    np.testing.assert_array_equal(_image(pipe), plain[0])  # replayed again, same picture


def test_hires_vae_of_its_own(pipe: Any, model_dir: Path) -> None:
    """A hires pass with its own VAE (Forge's hr_additional_modules) under a memory mode: the
    VAE becomes a unit as it comes (it was not one of the plan's: KeyError), same picture.
    Read for a pipeline in a mode (the server's kept hires VAE), it loads to host memory."""
    from diffusion.pipelines.module_load import HiresModules, _kept_vae, _load_like
    from diffusion.upscalers.interpolation import HiresFix

    def hires(vae: Any) -> np.ndarray:
        return pipe.txt2img("a lighthouse", steps=1, seed=3, width=SIZE, height=SIZE,
                            hires=HiresFix(scale=1.5, upscaler="Lanczos", steps=1),
                            hires_modules=HiresModules(("vae",), vae)).images[0]

    want = hires(_load_like(pipe.vae, model_dir))
    for mode in (MemoryMode(medvram=True), MemoryMode(max_vram=parse_size("8G"))):
        pipe.set_memory_mode(mode)
        kept = _kept_vae(pipe, model_dir)  # read once: under --medvram, to host memory
        assert device_bytes(kept) == (0 if mode.medvram else parameter_bytes(kept))
        np.testing.assert_array_equal(hires(kept), want)
    pipe.set_memory_mode(MemoryMode())
    assert device_bytes(kept) == parameter_bytes(kept)


def test_lora_patched_while_offloaded(pipe: Any, tmp_path: Path) -> None:
    """A LoRA patched into weights that wait in host memory (--medvram) reaches the picture
    as it does on the GPU, and removing it gives the original weights back."""
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    layer = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    rng = np.random.default_rng(0)
    safetensors_numpy.save_file({
        f"{layer}.lora_down.weight": rng.standard_normal((4, 32)).astype(np.float32),
        f"{layer}.lora_up.weight": rng.standard_normal((32, 4)).astype(np.float32)},
        str(tmp_path / "style.safetensors"))
    prompt = dict(negative_prompt="", steps=1, seed=5, width=SIZE, height=SIZE)
    pictures = []
    pipe.lora_dir = tmp_path
    for mode in (MemoryMode(), MemoryMode(medvram=True)):
        pipe.set_memory_mode(mode)
        pictures.append(pipe.txt2img("a boat <lora:style:1>", **prompt).images[0])
        pictures.append(pipe.txt2img("a boat", **prompt).images[0])
    pipe.set_memory_mode(MemoryMode())
    np.testing.assert_array_equal(pictures[0], pictures[2])
    np.testing.assert_array_equal(pictures[1], pictures[3])
    assert np.abs(pictures[0].astype(int) - pictures[1]).mean() > 1, "the LoRA changes nothing"


def test_loads_straight_to_host_memory(first_device: gpucore.Device, model_dir: Path,
                                       plain: tuple[np.ndarray, int], held: int) -> None:
    """Loaded for a memory mode (LoadOptions.offload: the CLI and the server under a mode),
    every network goes to host memory tensor by tensor: the load takes less GPU memory than
    the smallest network (none: 0 bytes). Each mode brings in what it keeps (under --lowvram
    and a budget the UNet's unstreamed parts) and gives the plain run's picture bit for bit;
    switched off, every weight is on the GPU and the picture is the same again."""
    loaded = None
    for flag in ("medvram", "lowvram", "max_vram"):
        loaded = None  # the last one's VAE on the GPU freed
        gc.collect()
        first_device.empty_pool()
        before = first_device.memory_stats().allocated
        budget = before + (plain[1] - held) // 2  # half the plain run's own peak, over that
        mode = MemoryMode.parse(**{flag: budget if flag == "max_vram" else True})
        first_device.reset_peak_memory()
        loaded = load_pipeline(model_dir, device=first_device, offload=True)
        peak = first_device.memory_stats().peak_allocated - before
        assert peak < min(parameter_bytes(n) for n in networks(loaded)), peak
        assert not any(device_bytes(n) for n in networks(loaded))
        try:
            loaded.set_memory_mode(mode)
            if mode.streams_unet:  # conv_in and the rest that stays came in with the mode
                assert device_bytes(loaded.unet.conv_in) == parameter_bytes(loaded.unet.conv_in)
            np.testing.assert_array_equal(_image(loaded), plain[0], err_msg=mode.label)
            assert loaded.memory.residency.evictions > 0
            assert first_device.memory_stats().peak_reserved <= (mode.max_vram or 1 << 62)
        except BaseException:
            loaded.set_memory_mode(MemoryMode())  # a budget left set fails every later test
            raise
    loaded.set_memory_mode(MemoryMode())
    assert all(device_bytes(n) == parameter_bytes(n) for n in networks(loaded))
    np.testing.assert_array_equal(_image(loaded), plain[0])


@pytest.mark.parametrize("text, size", [("4G", 4 << 30), ("2500M", 2500 << 20),
                                        ("512MiB", 512 << 20), ("1.5GB", 3 << 29),
                                        ("1000", 1000)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["4 gigs", "-1G", "0", "G"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"size|positive"):
        parse_size(text)
