"""Wan VACE's control latents (diffusion.pipelines.video.vace_inputs) against diffusers'
WanVACEPipeline on torch CPU float32 (`preprocess_conditions`, `prepare_video_latents`,
`prepare_masks`, concatenated as its `__call__` does), with a tiny random Wan VAE: a control
video of twice the size with a grey-level mask, reference pictures of other aspects (not
multiples of 8), the defaults without a video; the mask and the references visibly change the
latents; bad inputs refused in one line."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from PIL import Image
from sd_tiny import ported, randomized
from support import assert_close
from wan_tiny import WAN_TINY, tiny_wan_vae

import gpucore
from diffusion.models.wan_vae import AutoencoderKLWan
from diffusion.pipelines.video.vace_inputs import VaceCondition, vace_condition, vace_pixels

HEIGHT, WIDTH, FRAMES = 32, 48, 5  # 4 x 6 latents: no tile multiple
TOL = 1e-5  # measured: 1.6e-6 worst relative (the VAE's float32 sums on lavapipe)


@pytest.fixture(scope="module")
def reference() -> Any:
    """diffusers' WanVACEPipeline of the tiny VAE and a tiny VACE transformer (its patch size
    is all the input preparation reads of it)."""
    import diffusers

    vae = tiny_wan_vae()
    transformer = randomized(diffusers.WanVACETransformer3DModel(
        **WAN_TINY, vace_layers=[0], vace_in_channels=2 * 4 + 64), 9)
    return diffusers.WanVACEPipeline(tokenizer=None, text_encoder=None, vae=vae,
                                     scheduler=None, transformer=transformer)


def _expected(pipe: Any, video: Any, mask: Any, references: Any) -> np.ndarray:
    with torch.no_grad():
        v, m, refs = pipe.preprocess_conditions(video, mask, references, 1, HEIGHT, WIDTH,
                                                FRAMES, torch.float32, torch.device("cpu"))
        latents = pipe.prepare_video_latents(v, m, refs, None, torch.device("cpu"))
        return torch.cat([latents, pipe.prepare_masks(m, refs, None)], dim=1).numpy()


def _ours(device: gpucore.Device, pipe: Any, **inputs: Any) -> VaceCondition:
    vae = ported(AutoencoderKLWan, pipe.vae, device)
    return vace_condition(vae, vace_pixels(HEIGHT, WIDTH, FRAMES, **inputs))


def _inputs(seed: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """A video at twice the size, a mask of white, black and grey blocks (its levels reach
    the folded mask; smoothed by Lanczos across block edges), two pictures of other aspects."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (FRAMES, 2 * HEIGHT, 2 * WIDTH, 3), dtype=np.uint8)
    blocks = rng.choice(np.array([0, 0, 90, 200, 255, 255], np.uint8), (FRAMES, 4, 6))
    mask = np.kron(blocks, np.ones((16, 16), np.uint8))
    pictures = [rng.integers(0, 256, shape, dtype=np.uint8)
                for shape in ((45, 21, 3), (19, 70, 3))]
    return video, mask, pictures


def test_control_equals_diffusers(device: gpucore.Device, reference: Any) -> None:
    video, mask, pictures = _inputs(1)
    got = _ours(device, reference, video=video, mask=mask, references=pictures)
    expected = _expected(reference, [Image.fromarray(f) for f in video],
                         [Image.fromarray(f) for f in mask],
                         [Image.fromarray(p) for p in pictures])
    assert got.references == 2 and got.latent_frames == 2 + 2
    assert got.control.shape == expected.shape == (1, 4 + 4 + 64, 4, 4, 6)
    assert_close(got.control, expected, tol=TOL)
    noise = reference.prepare_latents(1, 4, HEIGHT, WIDTH, FRAMES + 4 * got.references,
                                      torch.float32, torch.device("cpu"))
    assert noise.shape[2] == got.latent_frames  # __call__'s noise: the references' frames too
    # the folded mask holds grey levels, not only 0 and 1
    assert ((got.control[:, 8:] > 0.01) & (got.control[:, 8:] < 0.99)).any()
    latents = np.ones((1, 4, 4, 4, 6)) * np.arange(4)[:, None, None]
    assert (got.without_references(latents)[0, 0, :, 0, 0] == [2, 3]).all()


def test_defaults_equal_diffusers(device: gpucore.Device, reference: Any) -> None:
    """No video: a zero one and an all-ones mask."""
    got = _ours(device, reference)
    assert got.references == 0
    assert_close(got.control, _expected(reference, None, None, None), tol=TOL)


def test_colour_mask_equals_diffusers(device: gpucore.Device, reference: Any) -> None:
    """Colour mask frames: each channel masks its own, the red one is folded."""
    video, _, pictures = _inputs(2)
    colour = np.random.default_rng(3).integers(0, 256, video.shape, dtype=np.uint8)
    got = _ours(device, reference, video=video, mask=colour, references=pictures[:1])
    expected = _expected(reference, [Image.fromarray(f) for f in video],
                         [Image.fromarray(f) for f in colour], [Image.fromarray(pictures[0])])
    assert_close(got.control, expected, tol=TOL)


def test_mask_and_references_matter(device: gpucore.Device, reference: Any) -> None:
    video, mask, pictures = _inputs(4)
    plain = _ours(device, reference, video=video).control
    masked = _ours(device, reference, video=video, mask=mask).control
    # the kept and regenerated parts' latents both change, not only the mask's channels
    assert np.abs(masked[:, :8] - plain[:, :8]).mean() > 0.05 * np.abs(plain[:, :8]).mean()
    first = _ours(device, reference, video=video, references=pictures[:1]).control
    other = _ours(device, reference, video=video, references=pictures[1:]).control
    assert first.shape[2] == plain.shape[2] + 1
    assert np.abs(first[:, :4, 0] - other[:, :4, 0]).mean() > 0.05 * np.abs(first).mean()
    assert_close(first[:, :, 1:], plain, tol=TOL)  # the video's own frames as they were


CLIP = np.zeros((FRAMES, HEIGHT, WIDTH, 3), np.uint8)


@pytest.mark.nodevice
@pytest.mark.parametrize(("inputs", "words"), [
    (dict(video=CLIP, mask=np.zeros((9, HEIGHT, WIDTH), np.uint8)), "mask video has 9 frames"),
    (dict(video=CLIP, mask=np.zeros((FRAMES, HEIGHT, 40), np.uint8)), "mask frame 0 is 40x32"),
    (dict(video=CLIP, mask=[None] * FRAMES), "mask frame 0 is a PIL image"),
    (dict(video=[*CLIP[:-1], CLIP[0, :16]]), "control video frame 4 is 48x16"),
    (dict(video=np.zeros((9, HEIGHT, WIDTH, 3), np.uint8)), "control video has 9 frames"),
    (dict(frames=8), r"1 \+ 4k"),
    (dict(height=40), "multiples of 16"),
    (dict(mask=CLIP[..., 0]), "needs a control video"),
    (dict(video=CLIP.astype(np.float32)), "control video frame 0 is a PIL image"),
    (dict(video="clip.mp4"), "list of frames"),
    (dict(references=[np.zeros((4, 30, 3), np.uint8)]), "at least 8x8"),
    (dict(references=["face.png"]), "reference picture 0 is a PIL image"),
])
def test_bad_inputs_refused(inputs: dict[str, Any], words: str) -> None:
    size = dict(height=inputs.pop("height", HEIGHT), width=WIDTH,
                num_frames=inputs.pop("frames", FRAMES))
    with pytest.raises(ValueError, match=words) as caught:
        vace_pixels(**size, **inputs)
    assert "\n" not in str(caught.value)


@pytest.mark.nodevice
def test_control_pixels_fit_the_video() -> None:
    """The pipeline's control: the defaults where none is given, a given one as it is, one
    made for another size or frame count refused in one line."""
    from diffusion.pipelines.video.vace_inputs import control_pixels

    default = control_pixels(None, HEIGHT, WIDTH, FRAMES)
    assert np.array_equal(default.video, vace_pixels(HEIGHT, WIDTH, FRAMES).video)
    assert control_pixels(default, HEIGHT, WIDTH, FRAMES) is default
    with pytest.raises(ValueError, match=r"made for 5 frames of 48x32, the video is 9 of "
                                         r"48x32") as raised:
        control_pixels(default, HEIGHT, WIDTH, 9)
    assert "\n" not in str(raised.value)
