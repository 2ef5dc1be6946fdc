"""FLUX.2's reference pictures (multi-reference editing) on the pipeline: klein with one
and with two references equals diffusers' Flux2KleinPipeline(image=[...]), each reference
visibly changing the picture; a reference whose sides are not multiples is refused. The
model prepares a reference of any size and aspect ratio as diffusers does (shrunk where over a
megapixel, cropped about its centre to the multiple). With a mask the model inpaints as
diffusers' Flux2KleinInpaintPipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from flux2_tiny import tiny_flux2_pipeline
from PIL import Image

import gpucore
from diffusion.imaging import to_unit_image
from diffusion.pipelines.flow.flux2 import Flux2KleinPipeline
from diffusion.pipelines.flow.flux2_model import Flux2Model
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.request import GenerationRequest


def _picture(seed: int, height: int, width: int, low: int = 0, high: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(low, high, (height, width, 3), dtype=np.uint8)


def test_flux2_references_as_diffusers(first_device: gpucore.Device, tmp_path: Path) -> None:
    reference: Any = tiny_flux2_pipeline(tmp_path, distilled=True)
    pipe = Flux2KleinPipeline.from_pretrained(tmp_path / "flux2-klein", device=first_device)
    refs = [_picture(1, 64, 64), _picture(2, 80, 64)]  # diffusers wants 64 px at least
    settings = dict(height=16, width=24, num_inference_steps=2, max_sequence_length=32)

    def theirs(images: list[np.ndarray]) -> np.ndarray:
        return reference(prompt="a red circle", image=[Image.fromarray(r) for r in images]
                         or None, generator=torch.Generator().manual_seed(7),
                         output_type="np", **settings).images[0]

    pictures = []
    for count in (0, 1, 2):
        ours = pipe("a red circle", seed=7, image=[r / 255.0 for r in refs[:count]],
                    **settings)[0]
        assert np.abs(ours - theirs(refs[:count])).mean() < 0.01
        pictures.append(ours)
    assert np.abs(pictures[1] - pictures[0]).mean() > 0.01  # the first reference matters
    assert np.abs(pictures[2] - pictures[1]).mean() > 0.01  # and the second
    with pytest.raises(ValueError, match="multiples of 4"):
        pipe("a red circle", image=[np.zeros((10, 12, 3))], **settings)


def test_flux2_inpaint_equals_diffusers(first_device: gpucore.Device,
                                        tiny_flux2_klein: tuple[Path, Any],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A mask: the init image is the picture inpainted at the request's strength, and the
    first reference as before, the further reference the second (diffusers'
    `image_reference`). The "diffusers" sampler draws Flux2KleinInpaintPipeline's picture
    (the init image's latent mean noised, the mask shrunk bilinearly: its edge here halfway
    through a latent column; measured 8.3e-4 mean abs of [0, 1] pixels, the uint8
    rounding; its nearest pixels in place of the bilinear mask: 1.5e-2). The kept latents
    are the init image's exactly, the masked ones move, and the reference picture changes
    the result."""
    import diffusers

    folder, reference = tiny_flux2_klein
    monkeypatch.setattr(Flux2Model, "max_sequence_length", 32)
    inpaint = diffusers.Flux2KleinInpaintPipeline(**reference.components,
                                                  is_distilled=reference.config.is_distilled)
    # a dark reference and a bright one: which it is visibly matters to the tiny model
    init, ref, other = (_picture(3, 32, 48), _picture(4, 32, 32, 0, 60),
                        _picture(5, 32, 32, 200, 256))
    mask = np.zeros((32, 48), np.uint8)
    mask[:, 22:] = 255  # latents of 4 pixels: columns 0-4 kept, 5 half (bilinear), 6- not
    model = load_pipeline(folder, device=first_device)
    settings: dict[str, Any] = dict(prompt="a red circle", width=48, height=32, steps=4, seed=7,
                                    sampler="diffusers", rng="torch", strength=0.6,
                                    cfg_scale=1.0, init_image=init, mask=mask)

    def theirs(picture: np.ndarray) -> np.ndarray:
        return inpaint(prompt="a red circle", image=Image.fromarray(init),
                       image_reference=Image.fromarray(picture),
                       mask_image=Image.fromarray(mask), strength=0.6, height=32, width=48,
                       num_inference_steps=4, max_sequence_length=32,
                       generator=torch.Generator().manual_seed(7), output_type="np").images[0]

    ours = model.generate(GenerationRequest(**settings, references=(ref,))).images[0] / 255
    expected = theirs(ref)
    assert np.abs(ours - expected).mean() < 2e-3
    assert np.abs(expected - theirs(other)).mean() > 4e-3  # the reference matters (6e-3)
    alone = model.generate(GenerationRequest(**settings)).images[0] / 255
    assert np.abs(alone - ours).mean() > 5e-3
    # the kept latents are the init image's mean, the masked ones repainted
    pipe = model.pipe
    latents = pipe("a red circle", image=[init / 255.0, ref / 255.0], init_image=init,
                   mask_image=mask, strength=0.6, height=32, width=48, num_inference_steps=4,
                   max_sequence_length=32, seed=7, output_type="latent")
    start = pipe.mean_latents(to_unit_image(init, 48, 32))
    assert np.abs(latents - start)[..., :5].max() < 1e-5
    assert np.abs(latents - start)[..., 6:].mean() > 0.1
    # a WebUI sampler inpaints too, the reference steering the masked part
    euler = {**settings, "sampler": "Euler"}
    painted = [model.generate(GenerationRequest(**euler, references=(picture,))).images[0]
               for picture in (ref, other)]
    assert np.abs(painted[0].astype(float) - painted[1])[mask > 0].mean() > 1



def test_flux2_inpaint_fits_the_init_image_first(first_device: gpucore.Device,
                                                 tiny_flux2_klein: tuple[Path, Any],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """An init image of 45 x 50 (sides not multiples of 16 nor of the tiny model's 4; portrait
    where the output is landscape) inpainted at 48 x 32 by resize mode 1 (crop and resize):
    the WebUI fits the picture and the mask to width x height first (imaging.fit_picture),
    and the "diffusers" sampler then draws Flux2KleinInpaintPipeline's picture of the fitted
    ones (measured 8.5e-4 mean abs, the uint8 rounding). Fed the picture itself, diffusers
    would ignore width x height: it stretches the picture to its own sides floored to the
    multiple (44 x 48 here) and draws at that size, where a WebUI request asks for width x
    height."""
    import diffusers

    from diffusion.imaging import fit_picture, mask_picture

    folder, reference = tiny_flux2_klein
    monkeypatch.setattr(Flux2Model, "max_sequence_length", 32)
    inpaint = diffusers.Flux2KleinInpaintPipeline(**reference.components,
                                                  is_distilled=reference.config.is_distilled)
    init, mask = _picture(3, 50, 45), np.zeros((50, 45), np.uint8)
    mask[20:, 10:] = 255
    model = load_pipeline(folder, device=first_device)
    ours = model.generate(GenerationRequest(
        prompt="a red circle", width=48, height=32, steps=2, seed=7, sampler="diffusers",
        rng="torch", strength=0.8, cfg_scale=1.0, init_image=init, mask=mask,
        resize_mode=1)).images[0] / 255
    picture, matte = (fit_picture(p, 48, 32, 1) for p in (Image.fromarray(init),
                                                          mask_picture(mask)))
    expected = inpaint(prompt="a red circle", image=picture, mask_image=matte,
                       strength=0.8, height=32, width=48, num_inference_steps=2,
                       max_sequence_length=32, generator=torch.Generator().manual_seed(7),
                       output_type="np").images[0]
    assert ours.shape == expected.shape == (32, 48, 3)
    assert np.abs(ours - expected).mean() < 2e-3


@pytest.mark.nodevice
@pytest.mark.parametrize(("width", "height"), [(70, 101), (150, 83), (1500, 700)])
def test_flux2_reference_pictures_are_prepared_as_diffusers(width: int, height: int) -> None:
    """A reference picture of sides that are not multiples of 16 and of an aspect ratio of its
    own, as Flux2KleinPipeline's (and Flux2Pipeline's) step 4 prepares it: shrunk by Lanczos
    to about 1024 x 1024 where larger, then `Flux2ImageProcessor.preprocess(...,
    resize_mode="crop")` to its sides floored to 16, which crops about the centre (its
    `_resize_and_crop` overrides VaeImageProcessor's resize-to-fill with a plain crop; the
    output's size plays no part). Resizing to fill first would give other pixels."""
    from diffusers.pipelines.flux2.image_processor import Flux2ImageProcessor
    from PIL import ImageOps

    from diffusion.pipelines.flow.flux2 import reference_picture

    picture = Image.fromarray(_picture(6, height, width))
    processor = Flux2ImageProcessor(vae_scale_factor=16)
    if width * height > 1024 * 1024:  # diffusers' step 4
        picture = processor._resize_to_target_area(picture, 1024 * 1024)
    side_w, side_h = picture.width // 16 * 16, picture.height // 16 * 16
    pixels = processor.preprocess(picture, height=side_h, width=side_w, resize_mode="crop")
    expected = (pixels[0].permute(1, 2, 0).numpy() + 1) / 2
    ours = reference_picture(_picture(6, height, width))
    assert ours.shape == expected.shape == (side_h, side_w, 3)
    assert np.abs(ours - expected).max() < 1e-6
    filled = ImageOps.fit(picture, (side_w, side_h), Image.Resampling.LANCZOS)
    assert np.abs(np.asarray(filled) / 255 - expected).mean() > 0.05


def test_flux2_references_of_other_sizes_as_diffusers(first_device: gpucore.Device,
                                                      tiny_flux2_klein: tuple[Path, Any],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the model: a further reference of 101 x 67 pixels (not multiples of the tiny
    model's 4, nor of 16; portrait where the output is landscape) gives diffusers'
    Flux2KleinPipeline(image=[init, reference]) picture (measured 8e-4 mean abs, the uint8
    rounding)."""
    from diffusers.pipelines.flux2.image_processor import Flux2ImageProcessor

    folder, reference = tiny_flux2_klein
    monkeypatch.setattr(Flux2Model, "max_sequence_length", 32)
    # diffusers refuses pictures under 64 px a side (a check of its own, not the model's)
    monkeypatch.setattr(Flux2ImageProcessor, "check_image_input",
                        staticmethod(lambda image, *args, **kwargs: image))
    init, ref = _picture(3, 32, 48), _picture(4, 101, 67)
    model = load_pipeline(folder, device=first_device)
    ours = model.generate(GenerationRequest(
        prompt="a red circle", init_image=init, references=(ref,), width=48, height=32,
        steps=2, seed=7, sampler="diffusers", rng="torch", cfg_scale=1.0)).images[0] / 255
    expected = reference(prompt="a red circle", image=[Image.fromarray(init),
                                                       Image.fromarray(ref)],
                         height=32, width=48, num_inference_steps=2, max_sequence_length=32,
                         generator=torch.Generator().manual_seed(7),
                         output_type="np").images[0]
    assert np.abs(ours - expected).mean() < 4e-3
