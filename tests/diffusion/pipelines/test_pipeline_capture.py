"""A pipeline keeps its UNet step and text encoder captures across generations
(diffusion.pipelines.sd.capture): later generations replay them, give the image a fresh pipeline
gives, see LoRA weights written in place, and record afresh when a parameter is replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="builds the tiny test model (extra: reference)")
safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="writes the test LoRA")
from sd_tiny import write_pipeline  # noqa: E402

import gpucore  # noqa: E402
from diffusion import load_pipeline  # noqa: E402
from diffusion.lora import LoraManager  # noqa: E402
from gpustd import Tensor  # noqa: E402

SIZE = 16  # 8x8 latents
PROMPT, NEGATIVE = "a lighthouse at dusk", "blurry"
# a (64, 64) projection of the tiny UNet, as test_lora names it
LAYER = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pipeline(tmp_path_factory.mktemp("tiny-sd-capture"))


def _image(pipe: Any) -> np.ndarray:
    return pipe.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=1, seed=3, width=SIZE,
                        height=SIZE).images[0]


def _counts(pipe: Any) -> tuple[int, ...]:
    """Recordings of the UNet step and the text encoder."""
    return tuple(c.captured.recordings for c in (pipe._unet_capture, pipe._text_capture))


def test_second_generation_only_replays(first_device: gpucore.Device, model_dir: Path) -> None:
    pipe = load_pipeline(model_dir, device=first_device)
    first = _image(pipe)
    assert _counts(pipe) == (1, 1)
    replays = pipe._unet_capture.captured.replays
    again = _image(pipe)
    assert _counts(pipe) == (1, 1)
    assert pipe._unet_capture.captured.replays == replays + 1
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(again, _image(load_pipeline(model_dir, device=first_device)))


def test_lora_written_in_place_is_replayed(first_device: gpucore.Device, model_dir: Path,
                                          tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "style.safetensors"
    safetensors_numpy.save_file({
        f"{LAYER}.lora_down.weight": rng.standard_normal((4, 64)).astype(np.float32),
        f"{LAYER}.lora_up.weight": rng.standard_normal((64, 4)).astype(np.float32)}, str(path))
    pipe = load_pipeline(model_dir, device=first_device)
    plain = _image(pipe)
    LoraManager(pipe).set([(path, 1.0, 1.0)])
    patched = _image(pipe)
    assert _counts(pipe) == (1, 1)
    fresh = load_pipeline(model_dir, device=first_device)
    LoraManager(fresh).set([(path, 1.0, 1.0)])
    np.testing.assert_array_equal(patched, _image(fresh))
    assert np.abs(patched.astype(int) - plain).mean() > 1, "the LoRA barely changes the picture"


def test_replaced_parameter_records_again(first_device: gpucore.Device,
                                          model_dir: Path) -> None:
    pipe = load_pipeline(model_dir, device=first_device)
    before = _image(pipe)
    conv = pipe.unet.conv_in
    conv.weight = Tensor.from_numpy(conv.weight.numpy() * 1.5, device=first_device,
                                    read_only=True)
    after = _image(pipe)
    assert _counts(pipe) == (2, 1)
    assert np.abs(after.astype(int) - before).mean() > 1, "a stale replay: the old weights"


def test_vae_decode_borrows_the_captures_scratch(first_device: gpucore.Device, model_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """While the VAE decodes, the UNet step's and the text encoder's scratch (activations no
    value of which outlives a call) is the pool's, not counted as allocated; the next
    generation takes the same buffers back and only replays."""
    from diffusion.pipelines.sd import stable_diffusion
    from gpucore import _kernel

    pipe = load_pipeline(model_dir, device=first_device)
    graphs = []
    seen: list[tuple[bool, int]] = []
    real = stable_diffusion.vae_decode

    def decode(*args: Any, **kwargs: Any) -> Any:
        if _kernel._begin_only.get() is not None:  # decode_ahead's dry run (GPUs that build
            return real(*args, **kwargs)           # in the background): nothing computed
        idle = {id(b) for bufs in first_device.pool._free.values() for b in bufs}
        graphs[:] = [e.graph for c in (pipe._unet_capture, pipe._text_capture)
                     for e in c.captured._entries.values()]
        scratch = [key for g in graphs for key in g._scratch]
        seen.append((all(g.lent for g in graphs), len(scratch)))
        assert set(scratch) <= idle, "the captures' scratch is not in the pool while decoding"
        return real(*args, **kwargs)

    monkeypatch.setattr(stable_diffusion, "vae_decode", decode)
    first = _image(pipe)
    kept = {key: g._buffers[key] for g in graphs for key in g._scratch}
    again = _image(pipe)
    assert seen[0][0] and seen[0][1] > 0 and seen == seen[:1] * 2
    assert _counts(pipe) == (1, 1)
    assert not any(g.lent or g.closed for g in graphs)
    assert all(g._buffers[key] is kept[key] for g in graphs for key in g._scratch)
    np.testing.assert_array_equal(again, first)
    # img2img's encode borrows them too (before its steps replay the same signature)
    real_encode = stable_diffusion.vae_encode
    lent_at_encode = []

    def encode(*args: Any, **kwargs: Any) -> Any:
        lent_at_encode.append(all(g.lent for g in graphs))
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(stable_diffusion, "vae_encode", encode)
    pipe.img2img(first, PROMPT, negative_prompt=NEGATIVE, steps=2, strength=0.5, seed=3,
                 width=SIZE, height=SIZE)
    assert lent_at_encode == [True] and _counts(pipe) == (1, 1)



def test_the_decoders_kernels_are_begun_before_the_steps(
        first_device: gpucore.Device, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a device that builds in the background the VAE decoder runs once under
    gpucore.begin_only before the first UNet step, on latents of the picture's shape, so its
    kernels are begun with the UNet's (decode_ahead); once per size; the same picture bytes.
    A device that builds in place (lavapipe's) does not."""
    from diffusion.pipelines.sd import decode_ahead, guided_unet, stable_diffusion

    monkeypatch.setattr(decode_ahead, "_begun", type(decode_ahead._begun)())
    events: list[tuple[str, Any]] = []
    real_decode, real_step = stable_diffusion.vae_decode, guided_unet.GuidedUNet.__call__

    def decode(vae: Any, latents: np.ndarray, **kwargs: Any) -> Any:
        begun = gpucore._kernel._begin_only.get() is first_device
        events.append(("begun" if begun else "decode", latents.shape))
        return real_decode(vae, latents, **kwargs)

    def step(*args: Any, **kwargs: Any) -> Any:
        events.append(("step", None))
        return real_step(*args, **kwargs)

    monkeypatch.setattr(stable_diffusion, "vae_decode", decode)
    monkeypatch.setattr(guided_unet.GuidedUNet, "__call__", step)
    pipe = load_pipeline(model_dir, device=first_device)
    expected = _image(pipe)
    shape = (1, 4, SIZE // pipe.vae_scale_factor, SIZE // pipe.vae_scale_factor)
    assert first_device.builds_later or [e for e in events if e[0] != "step"] == [
        ("decode", shape)]
    monkeypatch.setattr(first_device, "builds_later", True)
    events.clear()
    pipe = load_pipeline(model_dir, device=first_device)
    np.testing.assert_array_equal(_image(pipe), expected)
    np.testing.assert_array_equal(_image(pipe), expected)
    assert events[0] == ("begun", shape), "not begun before the first step"
    assert ("step", None) in events
    assert [e for e in events if e[0] != "step"] == [
        ("begun", shape), ("decode", shape), ("decode", shape)]
