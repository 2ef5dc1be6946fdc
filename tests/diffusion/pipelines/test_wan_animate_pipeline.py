"""Wan 2.2 Animate's pipeline against diffusers' WanAnimatePipeline on torch CPU (a tiny random
folder saved by diffusers): "animate" (unguided, as Wan Animate runs) and "replace" (guided:
the negative prompt and blank faces), each a video of two segments continuing from 1 frame
(test_animate_inputs: from 5); the pose video visibly changes the video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from PIL import Image
from wan_animate_pipe_tiny import FACE, random_video, tiny_wan_animate_pipeline

import gpucore

PROMPT = "a dancer on a stage"
HEIGHT, WIDTH, FRAMES = 16, 32, 9
# three steps at 1.0: the prompt's and negative prompt's calls computed at step 0 and skipped
# at 1 and 2 in the first segment, computed at 0 and 2 in the second
FBC_THRESHOLD, FBC_STEPS = 1.0, 3
# measured (frames in 0..1) over runs: 7.0e-3 to 7.9e-3 at worst, 6.5e-4 to 7.5e-4 mean
F16_MAX, F16_MEAN = 0.015, 1.5e-3


@pytest.fixture(scope="module")
def tiny_animate(tmp_path_factory: pytest.TempPathFactory, first_device: gpucore.Device
                 ) -> tuple[Any, Any, Path]:
    """Ours and diffusers' pipeline of one tiny folder, and the folder."""
    from diffusion.pipelines.video.wan_animate import WanAnimatePipeline

    root = tmp_path_factory.mktemp("tiny-wan-animate")
    reference = tiny_wan_animate_pipeline(root)
    folder = root / "wan-animate"
    return WanAnimatePipeline.from_pretrained(folder, device=first_device), reference, folder


@pytest.fixture
def diffusers_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    """diffusers' Animate module calls ftfy unconditionally; WanPipeline's cleaning skips it
    when it is not installed (as here), and is the same for these ASCII prompts."""
    from diffusers.pipelines.wan import pipeline_wan, pipeline_wan_animate

    monkeypatch.setattr(pipeline_wan_animate, "prompt_clean", pipeline_wan.prompt_clean)


def _inputs(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    # not the video's size nor aspect: the picture is fitted on black, the videos resized
    return {"image": Image.fromarray(random_video(rng, 1, 30, 36)[0]),
            "pose": random_video(rng, FRAMES, 40, 56), "face": random_video(rng, FRAMES, 20, 20),
            "background": random_video(rng, FRAMES, HEIGHT, WIDTH),
            "mask": (random_video(rng, FRAMES, HEIGHT, WIDTH, 1) > 127).astype(np.uint8) * 255}


def _pil(video: np.ndarray) -> list[Any]:
    return [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in video]


def _run(pipe: Any, reference: Any, x: dict[str, Any], replace: bool, segment: int,
         cache: Any = None, **settings: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Our video (through step cache `cache`) and, with `reference`, diffusers'."""
    from diffusion.pipelines.video.animate_inputs import animate_pixels

    extra = {"background": x["background"], "mask": x["mask"]} if replace else {}
    pixels = animate_pixels(x["image"], x["pose"], x["face"], height=HEIGHT, width=WIDTH,
                            face_size=FACE, **extra)
    ours = pipe(PROMPT, pixels=pixels, segment_frames=segment, seed=3, cache=cache,
                **settings)[0]
    if reference is None:
        return ours, None
    more = {"background_video": _pil(x["background"]), "mask_video": _pil(x["mask"])} \
        if replace else {}
    expected = reference(image=x["image"], pose_video=_pil(x["pose"]),
                         face_video=_pil(x["face"]), prompt=PROMPT, height=HEIGHT, width=WIDTH,
                         segment_frame_length=segment, mode="replace" if replace else "animate",
                         output_type="np", generator=torch.Generator().manual_seed(3),
                         **more, **settings).frames[0]
    return ours, expected


def test_animate_equals_diffusers(tiny_animate: tuple[Any, Any, Path],
                                  diffusers_prompts: None) -> None:
    """Animate, two segments of 5 frames (0-4, 4-8); another pose video visibly changes the
    video."""
    pipe, reference, _ = tiny_animate
    x = _inputs(1)
    ours, expected = _run(pipe, reference, x, False, 5, num_inference_steps=2)
    assert ours.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert np.abs(ours - expected).max() < 3e-5  # measured 3.0e-6
    other, _ = _run(pipe, None, {**x, "pose": _inputs(2)["pose"]}, False, 5,
                    num_inference_steps=2)
    assert np.abs(other - ours).mean() > 0.005  # measured 0.011, 3600 times the error


def test_replace_equals_diffusers(tiny_animate: tuple[Any, Any, Path],
                                  diffusers_prompts: None) -> None:
    """Replace, guided, two segments of 5 frames."""
    pipe, reference, _ = tiny_animate
    ours, expected = _run(pipe, reference, _inputs(4), True, 5, num_inference_steps=2,
                          guidance_scale=3.0, negative_prompt="blurry")
    assert ours.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert np.abs(ours - expected).max() < 3e-5  # measured 5.2e-6


def test_lowvram_and_interrupt(tiny_animate: tuple[Any, Any, Path], first_device: gpucore.Device
                               ) -> None:
    """--lowvram (the blocks streamed, the face encoders with the parts beside them) makes the
    plain mode's frames bitwise; a callback returning False at the end of the first segment
    stops there: that segment's frames, no second one."""
    from diffusion.pipelines.sd.memory import MemoryMode
    from diffusion.pipelines.video.animate_inputs import animate_pixels
    from diffusion.pipelines.video.wan_animate import WanAnimatePipeline

    pipe, _, folder = tiny_animate
    x = _inputs(6)
    pixels = animate_pixels(x["image"], x["pose"], x["face"], height=HEIGHT, width=WIDTH,
                            face_size=FACE, background=x["background"], mask=x["mask"])
    settings = {"pixels": pixels, "segment_frames": 5, "seed": 3, "num_inference_steps": 2,
                "guidance_scale": 3.0}
    calls: list[tuple[int, int]] = []

    def stop(done: int, total: int, latents: np.ndarray) -> bool:
        calls.append((done, total))
        return done < 2

    first = pipe(PROMPT, callback=stop, **settings)
    assert calls == [(1, 4), (2, 4)] and first.shape[1] == 5
    lowvram = WanAnimatePipeline.from_pretrained(folder, device=first_device, offload=True)
    lowvram.set_memory_mode(MemoryMode(lowvram=True))
    whole = lowvram(PROMPT, **settings)
    assert whole.shape[1] == FRAMES
    np.testing.assert_array_equal(whole[:, :5], first)


def test_fbc_equals_the_rule_by_hand(tiny_animate: tuple[Any, Any, Path],
                                     diffusers_prompts: None) -> None:
    """First Block Cache (`txt2vid --cache fbc:T`) on replace, guided, two segments of 5
    frames: diffusers' frames with the rule laid over its transformer by hand (the face block
    after block 0 in the first block's residual, models/test_step_cache_animate.py), the
    prompt's and negative prompt's calls apart, each segment's cached afresh; the skips
    visibly change the video."""
    import copy

    from first_block_cache_ref import vace_first_block_cache_by_hand

    from diffusion.pipelines.video import video_cache

    pipe, reference, _ = tiny_animate
    hooked = type(reference)(**{**reference.components,  # the module's reference left plain
                                "transformer": copy.deepcopy(reference.transformer)})
    decisions = vace_first_block_cache_by_hand(hooked.transformer, FBC_THRESHOLD, 2,
                                               fresh_every=2 * FBC_STEPS)
    x, settings = _inputs(4), {"num_inference_steps": FBC_STEPS, "guidance_scale": 3.0,
                               "negative_prompt": "blurry"}
    cache = video_cache(f"fbc:{FBC_THRESHOLD}", steps=FBC_STEPS)
    ours, expected = _run(pipe, hooked, x, True, 5, cache=cache, **settings)
    # (prompt, negative prompt) at steps 0, 1, 2 of the first segment, then of the second
    # (the tiny T5 tokenizer's pieces decide which calls fall under the threshold)
    assert decisions == [True, True, False, False, False, False,
                         True, True, False, False, False, True]
    assert cache is not None
    assert cache.summary() == "fbc 1, 5/12 model calls computed"
    assert np.abs(ours - expected).max() < 3e-5  # measured 6.0e-6
    uncached, _ = _run(pipe, None, x, True, 5, **settings)
    assert np.abs(ours - uncached).mean() > 0.05  # the skips matter (0.11)


def test_float16_near_diffusers_float32(tiny_animate: tuple[Any, Any, Path],
                                        f16_device: gpucore.Device,
                                        diffusers_prompts: None) -> None:
    """The folder loaded in float16 (UMT5, CLIP vision, the transformer, the VAE; the motion
    and face encoders stay float32): replace, guided, two segments of 5 frames, within
    float16's error of diffusers' float32 video; the pose still visibly moves it past that
    error."""
    from diffusion.pipelines.video.wan_animate import WanAnimatePipeline

    _, reference, folder = tiny_animate
    pipe = WanAnimatePipeline.from_pretrained(folder, dtype=np.float16, device=f16_device)
    assert pipe.transformer.dtype == np.float16
    x, settings = _inputs(4), {"num_inference_steps": 2, "guidance_scale": 3.0,
                               "negative_prompt": "blurry"}
    ours, expected = _run(pipe, reference, x, True, 5, **settings)
    error = np.abs(ours - expected)
    assert error.max() < F16_MAX and error.mean() < F16_MEAN, (error.max(), error.mean())
    other, _ = _run(pipe, None, {**x, "pose": _inputs(2)["pose"]}, True, 5, **settings)
    assert np.abs(other - ours).mean() > 10 * error.mean()  # measured 0.017, 26 times
