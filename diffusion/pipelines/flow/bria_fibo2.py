"""Bria FIBO 2, as diffusers' BriaFibo2Pipeline draws a picture from text: the prompt (FIBO 2's
structured JSON caption, cleaned and serialized compactly, or any text) read by Qwen3-VL's
language model into six bundles of its hidden states (models.bria_fibo2_prompt); the FIBO 2
transformer (models.bria_fibo2) predicts the flow of FLUX.2's VAE latents (32 channels, 8x,
normalized by the VAE's batch-norm statistics). Classifier-free guidance against the negative
prompt (by default the null caption FIBO 2 was trained with) in a second pass;
FlowMatchEulerDiscreteScheduler over sigmas 1 .. 1/n shifted by the picture's size. With the
torch RNG a seed gives diffusers' picture.

An edit (`image=`: up to five pictures) reads the pictures twice: Qwen3-VL's vision tower
beside the prompt (models.bria_fibo2_prompt.encode_edit), and FLUX.2's VAE, whose normalized
latents join every transformer call as clean context tokens (the negative prompt's too).
A caption whose text_render entries hold text is read with images of that text
(models.bria_fibo2_text): a generation's first steps, while the noise level is above 0.9, on
the caption without them (each entry's marker left empty), an edit's every step with them.

    pipe = BriaFibo2Pipeline.from_pretrained("Fibo-2.0-dev")
    images = pipe('{"short_description": "a red fox in the snow"}', height=1024, width=1024)
    edited = pipe("make it night", image=[picture])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ...loaders.bria_fibo2 import load_bria_fibo2_folder
from ...models.bria_fibo2 import BriaFibo2Transformer2DModel
from ...models.bria_fibo2_prompt import (
    DEFAULT_NEGATIVE_PROMPT,
    VISION_MARKER,
    edit_prompt,
    encode,
    encode_pictures,
    generation_prompt,
    parse_prompt,
)
from ...models.bria_fibo2_text import draw_text_image, mark_text_images, texts_of
from ...models.llm import LLMTextModel
from ...models.qwen3_vision import Qwen3VLVisionModel
from ...models.vae_flux2 import AutoencoderKLFlux2, patchify, unpatchify
from ...noise.rng import make_generator
from ...sampling.guidance import combine
from ...sampling.model_sampling import calculate_shift
from ...text.llm_tokenizer import LLMTokenizer
from ..finite import check_decoded, check_encoded
from .bria_fibo2_edit import as_pictures, edit_crops, encoder_copy, trained_size
from .flow_memory import load_network
from .start import StepCallback, check_call, check_sides, flow_schedule, run_euler

__all__ = ["MAX_PICTURES", "BriaFibo2Pipeline"]

MAX_PICTURES = 5  # the most pictures an edit reads, as diffusers' pipeline allows
Bundles = list[Tensor]  # a prompt's six text bundles
TEXT_IMAGES_MAX_NOISE = 0.9  # a generation reads its text images from this noise level on


class BriaFibo2Pipeline:
    """Bria FIBO 2 txt2img on gpustd. Components as diffusers names them;
    `scheduler_config` is the folder's `scheduler/scheduler_config.json`; `vision` Qwen3-VL's
    vision tower (None: no edits) and `processor_config` its picture sizes."""

    def __init__(self, *, transformer: BriaFibo2Transformer2DModel, vae: AutoencoderKLFlux2,
                 text_encoder: LLMTextModel, tokenizer: LLMTokenizer,
                 scheduler_config: dict[str, Any], vision: Qwen3VLVisionModel | None = None,
                 processor_config: dict[str, Any] | None = None) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.vision, self.processor_config = vision, processor_config
        self.scheduler_config = dict(scheduler_config)
        self.modules: list[str] = []
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> BriaFibo2Pipeline:
        """Load a Bria FIBO 2 diffusers folder (`load_bria_fibo2_folder`) onto `device` in
        `dtype`; `offload`: each network goes to host memory as soon as it is loaded.
        ValueError in one line where the folder's parts do not fit together."""
        weights = load_bria_fibo2_folder(path, variant=variant)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        assert transformer is not None and text_encoder is not None
        hidden = text_encoder.config["hidden_size"]
        wanted = transformer.config.get("cap_feat_dim", 7680)
        if wanted != 3 * hidden:
            raise ValueError(f"the transformer reads text {wanted} wide, three of the text "
                             f"encoder's {hidden}-wide states are {3 * hidden}: give the "
                             "folder's own Qwen3-VL")
        channels = weights.vae.config.get("latent_channels", 32)
        if channels != transformer.config.get("in_channels", 32):
            raise ValueError(f"the VAE's latents have {channels} channels, the transformer "
                             f"reads {transformer.config.get('in_channels', 32)}: give the "
                             "folder's own FLUX.2 VAE")
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        encoder = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        tower = weights.vision
        vision = None if tower is None else load(
            lambda: Qwen3VLVisionModel(tower.config, **place), tower)
        return cls(
            transformer=load(lambda: BriaFibo2Transformer2DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKLFlux2(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config, vision=vision,
            processor_config=weights.processor_config)

    def encode_prompt(self, prompt: str) -> Bundles:
        """The transformer's six text bundles (1, L, cap_feat_dim) of `prompt`, encoded as
        given, in its dtype. diffusers: `BriaFibo2Pipeline.encode_prompt`."""
        model = self.transformer
        return [asarray(b, dtype=model.dtype, device=model.device)
                for b in encode(self.text_encoder, self.tokenizer, prompt)]

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Pictures (B, H, W, 3) in [0, 1] from the transformer's latents (B, C, h, w): the
        batch norm undone over 2x2 patches, then FLUX.2's VAE. VaeNonFiniteError where it gave
        NaN or infinity."""
        raw = self.vae.from_transformer(patchify(latents))
        weight = self.vae.decoder.conv_in.weight
        images = self.vae.decode(asarray(raw, dtype=weight.dtype, device=weight.device))
        pictures = images.numpy().astype(np.float32)
        check_decoded(pictures, self.vae)
        return np.clip(pictures / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)  # type: ignore[no-any-return]

    def context_latents(self, crops: Sequence[Any]) -> list[Tensor]:
        """The pictures to edit as the transformer reads them (1, C, h, w): each crop in
        [-1, 1] through the VAE's encoder (its posterior's mean), normalized by the batch
        norm over 2x2 patches. diffusers: `BriaFibo2Pipeline.prepare_image_latents`."""
        weight, model = self.vae.encoder.conv_in.weight, self.transformer
        out = []
        for crop in crops:
            pixels = np.asarray(crop, np.float32).transpose(2, 0, 1)[None] / np.float32(255)
            mean, _ = self.vae.encode(asarray(pixels * 2 - 1, dtype=weight.dtype,
                                              device=weight.device))
            raw = mean.numpy().astype(np.float32)
            check_encoded(raw, self.vae)
            out.append(asarray(unpatchify(self.vae.to_transformer(raw)), dtype=model.dtype,
                               device=model.device))
        return out

    def _edit(self, prompts: Sequence[str], image: Any, height: int | None,
              width: int | None) -> tuple[list[list[Bundles]], list[Tensor], int, int]:
        """An edit's prompt bundles, context latents and size (None: the first picture's
        trained size about a megapixel)."""
        pictures = list(image) if isinstance(image, (list, tuple)) else [image]
        if not 1 <= len(pictures) <= MAX_PICTURES:
            raise ValueError(f"a FIBO 2 edit reads 1 to {MAX_PICTURES} pictures, got "
                             f"{len(pictures)}")
        multiple, area = 2 * self.vae_scale_factor, (128 * self.vae_scale_factor) ** 2
        pictures = as_pictures(pictures)
        if height is None and width is None:
            width, height = trained_size(pictures[0].width / pictures[0].height, multiple, area)
        height, width = height or 128 * self.vae_scale_factor, width or 128 * self.vae_scale_factor
        crops = edit_crops(pictures, width, height, multiple, area)
        copies = [encoder_copy(c) for c in crops]
        runs = []
        for p in prompts:
            images = [draw_text_image(t) for t in texts_of(parse_prompt(p)[0])]
            runs.append(self.encode_with_pictures(edit_prompt(p, len(crops), bool(images)),
                                                  copies + images))
        return [runs], self.context_latents(crops), height, width

    def encode_with_pictures(self, prompt: str, pictures: Sequence[Any]) -> Bundles:
        """`encode_prompt` of `prompt` with a vision marker per picture of `pictures` (an
        edit's crops as Qwen3-VL reads them, then the caption's text images)."""
        model = self.transformer
        if self.vision is None:
            raise ValueError("this FIBO 2 folder's text encoder has no vision tower to read the "
                             "pictures (or the caption's text images): give the folder's own")
        return [asarray(b, dtype=model.dtype, device=model.device) for b in encode_pictures(
            self.text_encoder, self.vision, self.tokenizer, prompt, pictures,
            processor_config=self.processor_config)]

    def generation_passes(self, prompt: str) -> tuple[Bundles, Bundles | None]:
        """A generation's bundles of `prompt`, and where its caption has text to render, the
        bundles without the text's images its first steps read (else None)."""
        cleaned = generation_prompt(prompt)
        texts = texts_of(parse_prompt(cleaned)[0])
        if not texts:
            return self.encode_prompt(cleaned), None
        images = [draw_text_image(t) for t in texts]
        marked, base = (json.dumps(mark_text_images(json.loads(cleaned), m),
                                   separators=(",", ":"), ensure_ascii=False)
                        for m in (VISION_MARKER, ""))
        return self.encode_with_pictures(marked, images), self.encode_prompt(base)

    def __call__(self, prompt: str | Sequence[str], *,
                 negative_prompt: str | Sequence[str] | None = None, height: int | None = None,
                 width: int | None = None, num_inference_steps: int = 30,
                 guidance_scale: float = 5.0, seed: int = 0, rng: str = "torch",
                 latents: np.ndarray | None = None, image: Any = None,
                 callback: StepCallback | None = None, output_type: str = "np") -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 32, height / 8, width / 8) ("latent"); sides
        1024 by default. Guidance applies when guidance_scale > 1, against `negative_prompt`
        (None: the null caption FIBO 2 was trained with). `image`: a picture, or a list of
        up to five, to edit by the prompt (the edit instruction, or a JSON caption of the
        result with an "edit_instruction"); the size by default the first picture's trained
        size. `seed` and `rng` ("torch", as diffusers; "numpy") draw the starting noise unless
        `latents` is given; `callback(done, total, latents)` after every step (False stops).
        diffusers: `BriaFibo2Pipeline(prompt, image=, negative_prompt=, height=, width=,
        num_inference_steps=, guidance_scale=, generator=torch.Generator().manual_seed(seed),
        output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        batch, guided = len(prompts), guidance_scale > 1
        negative = DEFAULT_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt
        negatives = [negative] * batch if isinstance(negative, str) else list(negative)
        if guided and len(negatives) != batch:
            raise ValueError(f"{len(negatives)} negative prompts for {batch} prompts: give one, "
                             "or one for each prompt")
        # 1. conditioning: each prompt (and its negative, as given, without pictures) a pass
        # of its own; an edit's pictures read by Qwen3-VL and by the VAE
        contexts: list[Tensor] = []
        bases: list[Bundles | None] = [None] * batch
        if image is not None:
            passes, contexts, height, width = self._edit(prompts, image, height, width)
        else:
            both = [self.generation_passes(p) for p in prompts]
            passes, bases = [[run for run, _ in both]], [base for _, base in both]
        height, width = height or 1024, width or 1024
        check_sides(height, width, 2 * self.vae_scale_factor, "Bria FIBO 2")
        if guided:
            passes.append([self.encode_prompt(p) for p in negatives])
        model = self.transformer
        h, w = height // self.vae_scale_factor, width // self.vae_scale_factor
        clean = model.clean()

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            timestep = float(np.float32(t) / np.float32(1000))
            early = float(t) / 1000 > TEXT_IMAGES_MAX_NOISE
            out = []
            for row in range(batch):
                tokens = asarray(x[row: row + 1], dtype=model.dtype, device=model.device)
                texts = [run[row] for run in passes]
                base = bases[row]
                if early and base is not None:
                    texts[0] = base
                preds = [model(tokens, timestep, text, contexts, clean=clean).numpy().astype(
                    np.float32) for text in texts]
                out.append(preds[0] if not guided else combine(
                    preds[1], preds[0], None, np.float32(guidance_scale)))
            return np.concatenate(out)
        # 2. the schedule: sigmas 1 .. 1/n, shifted by the number of 2x2 patches
        p = int(model.config["patch_size"])
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps,
                                  calculate_shift((h // p) * (w // p), self.scheduler_config))
        # 3. Euler steps along the flow from noise
        shape = (batch, int(model.config["in_channels"]), h, w)
        x = run_euler(self.vae, scheduler, shape, flow, generator=make_generator(rng, seed),
                      latents=latents, image=None, mask=None, strength=1.0, callback=callback,
                      output_type="latent", device=model.device,
                      scale_factor=self.vae_scale_factor)
        return x if output_type == "latent" else self.decode(x)
