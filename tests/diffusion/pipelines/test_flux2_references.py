"""FLUX.2's reference pictures (multi-reference editing) on the pipeline: klein with one
and with two references equals diffusers' Flux2KleinPipeline(image=[...]), each reference
visibly changing the picture; a reference whose sides are not multiples is refused. With a
mask the model inpaints as diffusers' Flux2KleinInpaintPipeline."""

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
