"""FLUX.2's transformer steps replayed from a capture its pipeline keeps
(diffusion.pipelines.flow.flow_replay), on tiny random klein and dev folders: over several
steps with CFG (one batch of the prompt's and the negative's rows), two prompts and two
embedded guidance scales on one recording, the pictures are the eager ones bit for bit;
weights written in place are replayed, a replaced parameter records afresh; a step cache
runs the steps eagerly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="builds the tiny test models (extra: reference)")

import gpucore
from gpustd import Tensor

PROMPTS = ("a red circle on a blue background", "a cat")
COMMON: dict[str, Any] = dict(height=16, width=24, seed=7, max_sequence_length=16,
                              output_type="latent")


def _counts(pipe: Any) -> tuple[int, int]:
    captured = pipe.step_replay.captured
    return captured.recordings, captured.replays


def _eager(pipe: Any, *runs: dict[str, Any]) -> list[np.ndarray]:
    """The pictures of `runs` (keywords of pipe) with the steps eager, then replaying again."""
    pipe.step_replay.use_eager(True)
    try:
        return [pipe(**run) for run in runs]
    finally:
        pipe.step_replay.use_eager(False)


def _klein(folder: Path, device: gpucore.Device) -> Any:
    from diffusion.pipelines.flow.flux2 import Flux2KleinPipeline

    pipe = Flux2KleinPipeline.from_pretrained(folder, device=device)
    pipe.distilled = False  # the base model's CFG pass, on the same weights
    return pipe


def test_klein_replays_cfg_steps_across_prompts(first_device: gpucore.Device,
                                                tiny_flux2_klein: tuple[Path, Any]) -> None:
    """Three Euler steps at CFG 4 (the padded prompts one length: one signature): one
    recording, then replays only, for a second prompt too; each picture the eager one."""
    pipe = _klein(tiny_flux2_klein[0], first_device)
    runs = [dict(prompt=p, num_inference_steps=3, guidance_scale=4.0,
                 negative_prompt="blurry", **COMMON) for p in PROMPTS]
    first = pipe(**runs[0])
    assert _counts(pipe) == (1, 2)
    second = pipe(**runs[1])
    assert _counts(pipe) == (1, 5)
    for replayed, eager in zip((first, second), _eager(pipe, *runs)):
        np.testing.assert_array_equal(replayed, eager)
    assert np.abs(first - second).mean() > 0.01, "the prompt barely matters"


def test_klein_changed_weights_and_step_cache(first_device: gpucore.Device,
                                              tiny_flux2_klein: tuple[Path, Any]) -> None:
    """Weights written into their buffers (a LoRA merged in place) are what the replay reads;
    a replaced parameter records afresh; each picture the eager one, each change visible. A
    step cache runs eagerly: no replay."""
    from diffusion.models.step_cache import CacheSpec, StepCache

    pipe = _klein(tiny_flux2_klein[0], first_device)
    run = dict(prompt=PROMPTS[0], num_inference_steps=2, guidance_scale=1.0, **COMMON)
    plain = pipe(**run)
    out = pipe.transformer.proj_out
    weight = out.weight.numpy()
    out.weight.buffer.write((weight * 1.5).astype(weight.dtype))
    written = pipe(**run)
    assert _counts(pipe) == (1, 3)
    np.testing.assert_array_equal(written, _eager(pipe, run)[0])
    out.weight = Tensor.from_numpy(weight * 0.5, device=first_device, read_only=True)
    replaced = pipe(**run)
    assert _counts(pipe)[0] == 2
    np.testing.assert_array_equal(replaced, _eager(pipe, run)[0])
    assert np.abs(written - plain).mean() > 0.01 and np.abs(replaced - plain).mean() > 0.01
    counts = _counts(pipe)
    pipe(**run, cache=StepCache(CacheSpec("fbc", 0.5), 2))
    assert _counts(pipe) == counts


def test_flux2_dev_replays_its_guidance(first_device: gpucore.Device,
                                        tiny_flux2_dev: tuple[Path, Any]) -> None:
    """FLUX.2 dev's embedded guidance scale is an input: two scales on one recording, each
    picture the eager one, and they differ."""
    from diffusion.pipelines.flow.flux2_dev import Flux2Pipeline

    pipe = Flux2Pipeline.from_pretrained(tiny_flux2_dev[0], device=first_device)
    runs = [dict(prompt=PROMPTS[0], num_inference_steps=2, guidance_scale=g, **COMMON)
            for g in (4.0, 1.5)]
    got = [pipe(**run) for run in runs]
    assert _counts(pipe) == (1, 3)
    for replayed, eager in zip(got, _eager(pipe, *runs)):
        np.testing.assert_array_equal(replayed, eager)
    assert np.abs(got[0] - got[1]).mean() > 0.01, "the guidance barely matters"


def test_flux2_tensor_timestep_rounds_as_host_numbers(
        first_device: gpucore.Device, tiny_flux2_dev: tuple[Path, Any]) -> None:
    """In float16 a replayed step's float32 Tensor timestep and guidance are scaled as host
    numbers are (rounded to float16, then x1000): the same embedding, bit for bit."""
    from diffusion.pipelines.flow.flux2_dev import Flux2Pipeline

    if not first_device.has_f16:
        pytest.skip("the device has no float16")
    model = Flux2Pipeline.from_pretrained(tiny_flux2_dev[0], device=first_device,
                                          dtype=np.float16).transformer
    t, g = np.array([0.7137], np.float32), np.array([3.3], np.float32)

    def embedded(*values: Any) -> np.ndarray:
        scaled = [model._thousandfold(v) for v in values]
        return model.time_guidance_embed(*scaled, first_device).numpy()

    given = embedded(*(Tensor.from_numpy(v, device=first_device) for v in (t, g)))
    np.testing.assert_array_equal(given, embedded(t, g))
