"""The hires fix on Qwen-Image 2.1's img2img (its editing: the init image and a further
reference are condition pictures beside the noise), as FLUX.2's (test_flux2_hires.py):
the second pass reads every condition picture as the first did, unchanged, and the picture is
diffusers' QwenImage21Pipeline running the same two passes beside them on a tiny random model:
its first pass, the latents enlarged by torch's bilinear interpolation (the WebUI's "Latent")
and noised to the stretched schedule's first kept sigma by the seed's noise at the new size,
then finished over that schedule's last sigmas (`sigmas`, `latents`). Another reference in
the second pass alone moves the picture far past their difference. Through the command line
(img2img with --hr-*): both passes, the hires size, the picture redrawn, the infotext."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from PIL import Image

import gpucore
from diffusion.pipelines.flow import qwen_image21
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.request import GenerationRequest
from diffusion.upscalers.interpolation import HiresFix

HEIGHT, WIDTH, SEED, STEPS, HIRES_STEPS, DENOISE = 32, 64, 11, 2, 2, 0.6
PROMPT = "put the red circle on the blue square, " * 3
SIDE = 256  # condition pictures read at about 256 x 256 pixels (diffusers' output_resolution)
BOUND = 2  # uint8 levels, max |ours - diffusers|


def _simple(steps: int) -> list[float]:
    """The Simple schedule's unshifted times, as the WebUI samplers take them."""
    return [(1000 - int(x * 1000 / steps)) / 1000 for x in range(steps)]


def _diffusers(pipe: Any, pictures: list[Image.Image]) -> np.ndarray:
    """diffusers' two passes beside `pictures`, as uint8-rounded floats."""
    from diffusers.pipelines.qwenimage21.pipeline_qwenimage21 import calculate_shift

    settings = dict(image=pictures, output_resolution=SIDE)
    total = int(HIRES_STEPS / DENOISE)
    with torch.no_grad():
        packed = pipe(PROMPT, height=HEIGHT, width=WIDTH, sigmas=_simple(STEPS),
                      generator=torch.Generator().manual_seed(SEED), output_type="latent",
                      **settings).images
        h, w = HEIGHT // 16, WIDTH // 16
        x = packed.transpose(1, 2).reshape(1, -1, h, w)
        x = torch.nn.functional.interpolate(x, size=(2 * h, 2 * w), mode="bilinear")
        config = pipe.scheduler.config
        mu = calculate_shift(4 * h * w, config.base_image_seq_len, config.max_image_seq_len,
                             config.base_shift, config.max_shift)
        t = _simple(total)[total - HIRES_STEPS:]
        sigma = pipe.scheduler.time_shift(mu, 1.0, torch.tensor(t[0])).item()
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(SEED))
        start = (sigma * noise + (1 - sigma) * x).flatten(2).transpose(1, 2)
        image = pipe(PROMPT, height=2 * HEIGHT, width=2 * WIDTH, sigmas=t, latents=start,
                     output_type="np", **settings).images[0]
    return (np.asarray(image)[..., :3] * 255).round()


def test_hires_fix_with_the_condition_pictures(first_device: gpucore.Device,
                                               tiny_qwenimage21: tuple[Path, Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qwen_image21, "CONDITION_AREA", SIDE * SIDE)
    folder, reference = tiny_qwenimage21
    model = load_pipeline(folder, device=first_device)
    rng = np.random.default_rng(3)
    init = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    ref, other = (rng.integers(low, high, (48, 48, 3), dtype=np.uint8)
                  for low, high in ((0, 60), (200, 256)))
    velocity, read = model.pipe.velocity, []

    def reading(prompts: Any, *, width: int, references: Any, **rest: Any) -> Any:
        read.append((width, references))
        if swap and width == 2 * WIDTH:  # the hires pass's: its further reference another
            references = [references[0], other]
        return velocity(prompts, width=width, references=references, **rest)

    def ours() -> np.ndarray:
        return model.generate(GenerationRequest(
            prompt=PROMPT, init_image=init, references=(ref,), width=WIDTH, height=HEIGHT,
            steps=STEPS, sampler="Euler", seed=SEED, rng="torch", cfg_scale=1.0,
            hires=HiresFix(scale=2.0, upscaler="Latent", steps=HIRES_STEPS,
                           denoise=DENOISE))).images[0].astype(np.float64)

    monkeypatch.setattr(model.pipe, "velocity", reading)
    swap = False
    got = ours()
    assert got.shape == (2 * HEIGHT, 2 * WIDTH, 3)
    assert [(width, len(pictures)) for width, pictures in read] == [(WIDTH, 2), (2 * WIDTH, 2)]
    assert all(np.array_equal(a, b) for a, b in zip(read[0][1], read[1][1], strict=True))
    expected = _diffusers(reference, [Image.fromarray(init), Image.fromarray(ref)])
    swap = True
    moved = ours()
    # ours is diffusers' up to the uint8 rounding (measured 1 level at most, 4.5e-4 mean);
    # the other reference moves the picture thousands of times that (measured 3.6 levels)
    assert np.abs(got - expected).max() <= BOUND and np.abs(got - expected).mean() < 0.02
    assert np.abs(moved - got).mean() > 1.5



def test_second_pass_reuses_what_the_first_read(first_device: gpucore.Device,
                                                tiny_qwenimage21: tuple[Path, Any],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With true CFG beside two condition pictures, the hires pass reads the pictures with
    neither the vision tower nor the VAE again, and encodes neither prompt again (4 prefixes
    made without the keeping, 2 with it); the picture is bit for bit the one made reading
    everything afresh. Another prompt beside the same pictures makes its prefix anew (the
    pictures still read once) and moves the flow: a prefix is kept by its prompt."""
    monkeypatch.setattr(qwen_image21, "CONDITION_AREA", SIDE * SIDE)
    folder, _reference = tiny_qwenimage21
    model = load_pipeline(folder, device=first_device)
    pipe = model.pipe
    rng = np.random.default_rng(4)
    init = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    ref = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    calls = {"tower": 0, "vae": 0, "prefix": 0}

    def counted(name: str, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return method(*args, **kwargs)
        return call

    monkeypatch.setattr(pipe.vision, "forward", counted("tower", pipe.vision.forward))
    monkeypatch.setattr(pipe.vae, "encode", counted("vae", pipe.vae.encode))
    monkeypatch.setattr(pipe.transformer, "prefix", counted("prefix", pipe.transformer.prefix))
    velocity = pipe.velocity

    def run(*, keep: bool) -> tuple[np.ndarray, dict[str, int]]:
        monkeypatch.setattr(pipe, "velocity", velocity if keep else (
            lambda *args, kept, **rest: velocity(*args, **rest)))  # every pass afresh
        calls.update(tower=0, vae=0, prefix=0)
        picture = model.generate(GenerationRequest(
            prompt=PROMPT, negative_prompt="blurry", init_image=init, references=(ref,),
            width=WIDTH, height=HEIGHT, steps=STEPS, sampler="Euler", seed=SEED,
            rng="torch", cfg_scale=3.0,
            hires=HiresFix(scale=2.0, upscaler="Latent", steps=HIRES_STEPS,
                           denoise=DENOISE))).images[0]
        return picture, dict(calls)

    afresh, read_twice = run(keep=False)
    kept, read_once = run(keep=True)
    assert read_twice == {"tower": 2, "vae": 4, "prefix": 4}
    assert read_once == {"tower": 1, "vae": 2, "prefix": 2}
    assert np.array_equal(kept, afresh)
    # another prompt beside the same pictures (the hires pass takes no prompt of its own
    # here): its prefix made anew, the pictures not read again; the flow it gives moves
    flows, shared = [], {}
    for prompt in (PROMPT, PROMPT, "a green triangle"):
        calls.update(tower=0, vae=0, prefix=0)
        flow, shape, _mu = velocity([prompt], height=HEIGHT, width=WIDTH,
                                    references=[init, ref], kept=shared)
        x = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
        flows.append((flow(x, 500.0), dict(calls)))
    assert [read for _, read in flows] == [{"tower": 1, "vae": 2, "prefix": 1},
                                           {"tower": 0, "vae": 0, "prefix": 0},
                                           {"tower": 0, "vae": 0, "prefix": 1}]
    assert np.array_equal(flows[0][0], flows[1][0])
    assert np.abs(flows[2][0] - flows[0][0]).mean() > 0.05 * np.abs(flows[0][0]).mean()

def test_hires_fix_from_the_cli(tiny_qwenimage21: tuple[Path, Any], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`img2img --init-image ... --hr-scale 2 --hr-steps 2 --hr-denoise 0.6`: both passes
    read the init image, the picture is at the hires size, far from the picture of the same
    command without the hires fix enlarged (Lanczos), and its infotext names the hires
    fields and the first pass's size."""
    from cli_support import cli_ok, png_levels

    from diffusion.infotext import read_infotext

    monkeypatch.setattr(qwen_image21, "CONDITION_AREA", SIDE * SIDE)
    init = np.random.default_rng(5).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(init).save(tmp_path / "init.png")
    velocity, read = qwen_image21.QwenImage21Pipeline.velocity, []

    def reading(pipe: Any, prompts: Any, *, width: int, references: Any, **rest: Any) -> Any:
        read.append((width, [np.asarray(p) for p in references]))
        return velocity(pipe, prompts, width=width, references=references, **rest)

    monkeypatch.setattr(qwen_image21.QwenImage21Pipeline, "velocity", reading)
    common = ("img2img", "--model", str(tiny_qwenimage21[0]), "--init-image",
              str(tmp_path / "init.png"), "--prompt", PROMPT, "--width", str(WIDTH),
              "--height", str(HEIGHT), "--steps", str(STEPS), "--sampler", "Euler",
              "--seed", str(SEED), "--dtype", "float32")
    plain = png_levels(cli_ok(capsys, *common, "--out", str(tmp_path / "plain.png"))[0])
    out = tmp_path / "hires.png"
    cli_ok(capsys, *common, "--hr-scale", "2", "--hr-steps", str(HIRES_STEPS),
           "--hr-denoise", str(DENOISE), "--out", str(out))
    hires = png_levels(out)
    assert plain.shape == (HEIGHT, WIDTH, 3) and hires.shape == (2 * HEIGHT, 2 * WIDTH, 3)
    assert [width for width, _ in read] == [WIDTH, WIDTH, 2 * WIDTH]
    assert all(len(pictures) == 1 and np.array_equal(pictures[0], init)
               for _, pictures in read)
    enlarged = np.asarray(Image.fromarray(plain.astype(np.uint8)).resize(
        (2 * WIDTH, 2 * HEIGHT), Image.Resampling.LANCZOS), np.int16)
    # the second pass redraws the picture (measured 66 levels mean from the enlarged one)
    assert np.abs(hires - enlarged).mean() > 20
    text = read_infotext(out) or ""
    for field in (f"Size: {WIDTH}x{HEIGHT}", f"Denoising strength: {DENOISE}",
                  "Hires upscale: 2", f"Hires steps: {HIRES_STEPS}", "Hires upscaler: Latent"):
        assert field in text, (field, text)
