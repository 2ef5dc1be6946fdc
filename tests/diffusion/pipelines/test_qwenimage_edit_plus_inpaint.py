"""Qwen-Image-Edit Plus (2509 and later: several references) inpainting against a reference
assembled from diffusers, which has no Plus inpaint pipeline: QwenImageEditInpaintPipeline
run on the Plus model's parts with the Plus model's conditioning put in. What QwenImageEdit-
PlusPipeline feeds its transformer besides the noise is read off one call of it (a forward
pre-hook on the transformer records its keywords): the prompt embeddings (`encode_prompt` of
"Picture 1: ... Picture 2: ..." with each reference read at the condition area; the negative
prompt's from the CFG call), and the latent tokens and `img_shapes` of the references after
the first (`prepare_latents`: each one's VAE mean at the reference area). The inpaint
pipeline takes the embeddings as `prompt_embeds` / `negative_prompt_embeds`, and a pre-hook
on its transformer appends those tokens after its own reference tokens and their shapes
after its own `img_shapes`, as the Plus pipeline lays them out.

Why that is the algorithm our pipeline claims (qwen_image_edit.py, qwen_image_edit_plus.py:
the init image the picture inpainted and the first reference, the further references as an
edit reads them): the two diffusers loops make the same transformer call (the noise tokens,
then the references' tokens, `img_shapes` listing each; the noise tokens' prediction kept),
the same true CFG with the norm rescale and the same Euler step, with `mu` from the noise
tokens alone; what the Plus pipeline adds is its prompt and its further references, both
taken from it here. What the inpaint pipeline adds is its own alone: the strength's tail of
the schedule, the init image's posterior draw noised to its first sigma, that draw as the
first reference's tokens (at the picture's size), and the kept part put back after every
step. The init image is drawn at its own calculated size, as ours at the request's: the same
96 x 64 here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from PIL import Image
from qwenedit_tiny import read_at_area, tiny_qwenimage_edit_pipeline

import diffusion.pipelines.flow.qwen_image_edit as edit_module
import gpucore
from diffusion.imaging import to_unit_image
from diffusion.noise.rng import make_generator
from diffusion.pipelines.flow.qwen_image_edit_plus import QwenImageEditPlusPipeline
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.request import GenerationRequest

AREA = 64 * 96  # the reference area (diffusers' 1024 x 1024 would be slow here)
SHRINK = AREA / (1024 * 1024)  # the condition area scaled down alike
PROMPT = "put the hat of picture 2 on the cat of picture 1, " * 4
NEGATIVE = "a blurry photo, " * 4
SEED, STEPS, STRENGTH, CFG = 7, 3, 0.6, 4.0  # 2 steps run
WIDTH, HEIGHT = 96, 64


@pytest.fixture(scope="module")
def tiny_plus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """The Plus folder, diffusers' QwenImageEditPlusPipeline of it and the
    QwenImageEditInpaintPipeline of the same parts, the areas scaled down for both sides."""
    import diffusers
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_inpaint as inpaint_module
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus_module

    root = tmp_path_factory.mktemp("tiny-qwen-edit-plus-inpaint")
    edit = tiny_qwenimage_edit_pipeline(root)
    plus = diffusers.QwenImageEditPlusPipeline(**edit.components)
    plus.save_pretrained(root / "plus")
    patch = pytest.MonkeyPatch()
    plus_dimensions, inpaint_dimensions = (plus_module.calculate_dimensions,
                                           inpaint_module.calculate_dimensions)
    patch.setattr(plus_module, "calculate_dimensions",
                  lambda area, ratio: plus_dimensions(area * SHRINK, ratio))
    patch.setattr(inpaint_module, "calculate_dimensions",
                  lambda _, ratio: inpaint_dimensions(AREA, ratio))
    patch.setattr(edit_module, "REFERENCE_AREA", AREA)
    patch.setattr(QwenImageEditPlusPipeline, "condition_area", int(384 * 384 * SHRINK))
    try:
        with read_at_area(edit, AREA):
            yield (root / "plus", plus,
                   diffusers.QwenImageEditInpaintPipeline(**edit.components))
    finally:
        patch.undo()


def _transformer_calls(pipe: Any, **call: Any) -> list[dict[str, Any]]:
    """The keywords of each transformer call of `pipe(**call)`."""
    calls: list[dict[str, Any]] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        calls.append(kwargs)

    hook = pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            pipe(**call)
    finally:
        hook.remove()
    return calls


def _reference(plus: Any, inpaint: Any, init: Image.Image, mask: np.ndarray,
               references: list[Image.Image]) -> np.ndarray:
    """The assembled reference's picture (H, W, 3) in [0, 1] of `init` inpainted under
    `mask` with the Plus model reading [init, *references], at true CFG against NEGATIVE."""
    # the first step's two calls (one step alone: Qwen-Image's terminal stretch divides 0 by 0)
    positive, negative = _transformer_calls(
        plus, image=[init, *references], prompt=PROMPT, negative_prompt=NEGATIVE,
        true_cfg_scale=CFG, height=HEIGHT, width=WIDTH, num_inference_steps=2,
        output_type="latent")[:2]
    shapes = positive["img_shapes"][0]  # the noise, the init image, the further references
    first = sum(frames * h * w for frames, h, w in shapes[:2])
    further, further_shapes = positive["hidden_states"][:, first:], shapes[2:]

    def plus_references(module: Any, args: Any, kwargs: dict[str, Any]
                        ) -> tuple[Any, dict[str, Any]]:
        kwargs["hidden_states"] = torch.cat([kwargs["hidden_states"], further], dim=1)
        kwargs["img_shapes"] = [[*one, *further_shapes] for one in kwargs["img_shapes"]]
        return args, kwargs

    hook = inpaint.transformer.register_forward_pre_hook(plus_references, with_kwargs=True)
    try:
        with torch.no_grad():
            return inpaint(  # type: ignore[no-any-return]
                image=init, mask_image=Image.fromarray(mask), strength=STRENGTH,
                true_cfg_scale=CFG, num_inference_steps=STEPS,
                prompt_embeds=positive["encoder_hidden_states"],
                prompt_embeds_mask=positive["encoder_hidden_states_mask"],
                negative_prompt_embeds=negative["encoder_hidden_states"],
                negative_prompt_embeds_mask=negative["encoder_hidden_states_mask"],
                generator=torch.Generator().manual_seed(SEED), output_type="np").images[0]
    finally:
        hook.remove()


def _square(seed: int, low: int, high: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(low, high, (80, 80, 3),
                                                                dtype=np.uint8))


def test_edit_plus_inpaint_equals_diffusers(first_device: gpucore.Device,
                                            tiny_plus: tuple[Path, Any, Any]) -> None:
    """The init image and a second reference of another size and shape, the mask's edge on a
    2x2 latent patch's, 2 steps run at true CFG 4: the assembled reference's picture through
    the model (measured 9.8e-4 mean abs, 2.0e-3 max of [0, 1] pixels: the uint8 rounding)
    and, with another second reference, through the pipeline at its default size, the init
    image's as diffusers' (measured 2.0e-6 mean abs, 2.2e-5 max of the float pictures). The
    kept latents are the init image's draw exactly, the repainted ones move (measured 5.4
    mean abs); the second reference moves the repainted part (measured 1.5e-2 mean abs, on
    both sides alike) three times as much as the kept part (4.9e-3: the VAE decoder's
    mid-block attention reaches across the whole picture)."""
    folder, plus, inpaint = tiny_plus
    init = Image.fromarray(np.random.default_rng(5).integers(0, 256, (HEIGHT, WIDTH, 3),
                                                             np.uint8))
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[:, 48:] = 255  # whole 2x2 patches of latents: kept at the left
    hat, other = _square(4, 150, 256), _square(6, 0, 100)
    model = load_pipeline(folder, device=first_device)
    assert model.family == "qwen-image-edit-plus"
    ours = model.generate(GenerationRequest(
        prompt=PROMPT, negative_prompt=NEGATIVE, init_image=init, references=(hat,),
        mask=mask, width=WIDTH, height=HEIGHT, steps=STEPS, seed=SEED, cfg_scale=CFG,
        strength=STRENGTH, sampler="diffusers", rng="torch")).images[0] / 255
    expected = _reference(plus, inpaint, init, mask, [hat])
    error = np.abs(ours - expected)
    assert error.mean() < 1.5e-3 and error.max() < 3e-3
    latents = model.pipe(PROMPT, image=[init, other], init_image=init, mask_image=mask,
                         num_inference_steps=STEPS, true_cfg_scale=CFG,
                         negative_prompt=NEGATIVE, seed=SEED, strength=STRENGTH,
                         output_type="latent")  # drawn at the init image's size
    swapped, other_expected = model.pipe.decode(latents)[0], _reference(
        plus, inpaint, init, mask, [other])
    error = np.abs(swapped - other_expected)
    assert error.mean() < 5e-6 and error.max() < 5e-5
    drawn = model.pipe.encode_image(to_unit_image(init, WIDTH, HEIGHT),
                                    make_generator("torch", SEED))
    assert np.abs(latents - drawn)[..., :6].max() == 0  # latent columns of the kept pixels
    assert np.abs(latents - drawn)[..., 6:].mean() > 1
    moved, theirs = np.abs(swapped - ours), np.abs(other_expected - expected)
    assert moved[:, 48:].mean() > 1e-2 and theirs[:, 48:].mean() > 1e-2
    assert moved[:, 48:].mean() > 2 * moved[:, :48].mean()
