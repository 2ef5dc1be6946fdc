"""Z-Image Omni, as diffusers' ZImageOmniPipeline draws it: Z-Image (pipelines.flow.z_image)
whose transformer (models.z_image_omni) also reads condition pictures, for editing (one
picture) and multi-picture generation. Each picture over a megapixel is resized (Lanczos) to
about a megapixel (to height x width's area when both are given, larger or smaller; smaller
pictures are read as they are); its sides cropped to multiples
of 16 give the VAE latents (the posterior's mean, shifted and scaled) and the picture before
the crop gives SigLIP2's features (models.siglip2). The prompt is cut into pieces around the
pictures' places (Qwen's vision tokens), each piece encoded by Qwen3 on its own; the picture
is drawn at the last condition picture's cropped size unless height and width say otherwise.
CFG as Z-Image's, `pos + g * (pos - neg)` above 0, the negative pass with the same pictures.

    pipe = ZImageOmniPipeline.from_pretrained("Z-Image-Omni")
    images = pipe("make it night", image=[picture], num_inference_steps=50, seed=7)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ...loaders.z_image import load_zimage_folder
from ...loaders.z_image.siglip import siglip2_max_patches, siglip2_weights
from ...models import AutoencoderKL
from ...models.llm import LLMTextModel
from ...models.siglip2 import Siglip2Vision
from ...models.step_cache import StepCache
from ...models.tiled_vae import vae_encode
from ...models.z_image_blocks import CleanModulation
from ...models.z_image_omni import ZImageOmniTransformer2DModel
from ...noise.rng import make_generator
from ...sampling.model_sampling import calculate_shift
from ...text.llm_tokenizer import LLMTokenizer
from ..finite import check_encoded
from ..picture_limits import FLUX2_PROCESSOR
from .flow_memory import load_network
from .flow_replay import StepReplay
from .flux2 import reference_picture, shrunk_picture
from .start import StepCallback, check_call, check_sides, flow_schedule, run_euler
from .z_image import ZImagePipeline

__all__ = ["ZImageOmniPipeline", "check_pictures", "omni_pieces"]

AREA = 1024 * 1024  # condition pictures larger than this are shrunk to about it


def omni_pieces(prompt: str, pictures: int) -> list[str]:
    """The caption pieces of `prompt` with `pictures` condition pictures: Qwen's chat turn cut
    at each picture's place (and the target's, after the assistant's turn opens). diffusers:
    ZImageOmniPipeline._encode_prompt's `prompt_list`."""
    if not pictures:
        return ["<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n"]
    return (["<|im_start|>user\n<|vision_start|>"]
            + ["<|vision_end|><|vision_start|>"] * (pictures - 1)
            + ["<|vision_end|>" + prompt + "<|im_end|>\n<|im_start|>assistant\n<|vision_start|>",
               "<|vision_end|><|im_end|>"])


def check_pictures(images: Sequence[Any]) -> None:
    """ValueError in one line for a condition picture (PIL or HxWx3) diffusers refuses: under
    64 pixels a side, or of an aspect ratio over 8 (its Flux2ImageProcessor's check)."""
    for k, image in enumerate(images, 1):
        size = image.size if hasattr(image, "mode") else (image.shape[1], image.shape[0])
        FLUX2_PROCESSOR.check(size, f"condition picture {k}", "Z-Image Omni models")


class ZImageOmniPipeline(ZImagePipeline):
    """Z-Image Omni on gpustd: ZImagePipeline's components, an Omni transformer, and
    `siglip`, SigLIP2's vision tower (models.siglip2)."""

    transformer: ZImageOmniTransformer2DModel

    def __init__(self, *, transformer: ZImageOmniTransformer2DModel, vae: AutoencoderKL,
                 text_encoder: LLMTextModel, tokenizer: LLMTokenizer, siglip: Siglip2Vision,
                 scheduler_config: dict[str, Any]) -> None:
        super().__init__(transformer=transformer, vae=vae, text_encoder=text_encoder,
                         tokenizer=tokenizer, scheduler_config=scheduler_config)
        self.siglip = siglip
        # the Omni transformer's step, replayed in the plain memory mode (flow_replay)
        self.step_replay = StepReplay(_transformer_step)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,  # type: ignore[override]
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> ZImageOmniPipeline:
        """Load a Z-Image Omni diffusers folder (`load_zimage_folder(omni=True)`, its SigLIP2
        tower from siglip/ and siglip_processor/) onto `device` in `dtype`; `offload` as
        ZImagePipeline's."""
        weights = load_zimage_folder(path, variant=variant, omni=True)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        assert transformer is not None and text_encoder is not None
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        encoder = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        tower = siglip2_weights(path, variant=variant)
        siglip = load(lambda: Siglip2Vision(tower.config, **place,
                                            max_num_patches=siglip2_max_patches(path)), tower)
        return cls(
            transformer=load(lambda: ZImageOmniTransformer2DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKL(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir), siglip=siglip,
            scheduler_config=weights.scheduler_config)

    def conditions(self, images: Sequence[Any], height: int | None = None,
                   width: int | None = None) -> tuple[list[Tensor], list[Tensor]]:
        """The condition pictures' latents (1, C, h, w) in the transformer's dtype and their
        SigLIP2 features (h', w', D). diffusers: the pictures' preparation in
        ZImageOmniPipeline.__call__, `prepare_image_latents` (the posterior's mode) and
        `prepare_siglip_embeds`."""
        check_pictures(images)
        area = height * width if height and width else AREA
        dtype, device = self.transformer.dtype, self.transformer.device
        latents, features = [], []
        for image in images:
            # resized to height x width's area only where over a megapixel, as diffusers
            shrunk = shrunk_picture(image, area, over=AREA)
            cropped = reference_picture(shrunk, self.vae_scale_factor * 2, max(area, AREA),
                                        "Z-Image Omni")
            mean, _ = vae_encode(self.vae, cropped.transpose(2, 0, 1)[None] * 2 - 1)
            check_encoded(mean, self.vae)
            latent = (mean.astype(np.float32) - self.vae.shift_factor) * self.vae.scaling_factor
            latents.append(asarray(latent.astype(np.float32), dtype=dtype, device=device))
            features.append(self.siglip.encode(np.asarray(shrunk))[0])
        return latents, features

    def condition_size(self, images: Sequence[Any], height: int | None = None,
                       width: int | None = None) -> tuple[int, int]:
        """The size drawn at: height x width, each where given, else the last condition
        picture's cropped size (1024 without pictures), as diffusers' call picks it."""
        check_pictures(images)
        if images and not (height and width):
            picture = reference_picture(shrunk_picture(images[-1], AREA),
                                        self.vae_scale_factor * 2, AREA, "Z-Image Omni")
            height, width = height or picture.shape[0], width or picture.shape[1]
        return int(height or 1024), int(width or 1024)

    def velocity(self, prompts: Sequence[str], *, height: int,  # type: ignore[override]
                 width: int, guidance_scale: float = 5.0,
                 negative_prompt: str | Sequence[str] = "", max_sequence_length: int = 512,
                 image: Sequence[Any] = (), cache: StepCache | None = None,
                 control: Any = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """ZImagePipeline.velocity's flow with the condition pictures `image` in every pass,
        the negative prompt's too; `cache` as Z-Image's (one branch: CFG's rows are one call,
        as in diffusers' batch); no ControlNet units yet (ValueError)."""
        if control is not None:
            raise ValueError("ControlNet units: not supported for Z-Image Omni yet; leave them "
                             "out")
        scale = self.vae_scale_factor * 2
        latents, features = self.conditions(image, height, width)
        batch, pieces = len(prompts), len(latents)
        captions = self._pieces(prompts, pieces, max_sequence_length)
        guided = guidance_scale > 0
        if guided:
            negatives = ([negative_prompt] * batch if isinstance(negative_prompt, str)
                         else list(negative_prompt))
            captions += self._pieces(negatives, pieces, max_sequence_length)
        h, w = 2 * (int(height) // scale), 2 * (int(width) // scale)
        dtype, device = self.transformer.dtype, self.transformer.device
        g = np.float32(guidance_scale)
        clean = CleanModulation()  # the clean timestep's modulations, made on the first step
        branch = None if cache is None else cache.branch()
        # replayed unless a step cache decides on the host (flow_replay)
        step = self.step_replay.step(self.transformer) if cache is None else None

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            timestep = (np.float32(1000) - np.float32(t)) / np.float32(1000)
            batched = np.concatenate([x, x]) if guided else x
            times = np.full(len(batched), timestep, np.float32)
            if step is not None:
                out = step(asarray(batched, dtype=dtype, device=device),
                           asarray(times, device=device), captions, latents, features)
            else:
                out = self.transformer(asarray(batched, dtype=dtype, device=device), times,
                                       captions, latents, features, clean=clean, cache=branch)
            pred = out.numpy().astype(np.float32)
            if guided:
                positive, negative = pred[:batch], pred[batch:]
                pred = positive + g * (positive - negative)
            return -pred

        mu = calculate_shift((h // 2) * (w // 2), self.scheduler_config)
        return flow, (batch, self.transformer.config["in_channels"], h, w), mu

    def _pieces(self, prompts: Sequence[str], pictures: int, max_sequence_length: int
                ) -> list[list[Tensor]]:
        """Each prompt's caption pieces' states (`omni_pieces`, each encoded on its own)."""
        texts = [omni_pieces(p, pictures) for p in prompts]
        states = self.encode_texts([t for pieces in texts for t in pieces], max_sequence_length)
        size = len(texts[0]) if texts else 0
        return [states[i * size:(i + 1) * size] for i in range(len(texts))]

    def __call__(self, prompt: str | Sequence[str], *,  # type: ignore[override]
                 image: Any = None, height: int | None = None, width: int | None = None,
                 num_inference_steps: int = 50, guidance_scale: float = 5.0,
                 negative_prompt: str | Sequence[str] = "", seed: int = 0, rng: str = "torch",
                 max_sequence_length: int = 512, latents: np.ndarray | None = None,
                 callback: StepCallback | None = None, output_type: str = "np",
                 cache: StepCache | None = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list) beside the condition pictures `image` (one,
        or a list; PIL or HxWx3 uint8; none: text to image): as ZImagePipeline's call,
        `cache` its step caching (`velocity`).
        diffusers: `ZImageOmniPipeline(image=, prompt=, height=, width=,
        num_inference_steps=, guidance_scale=, negative_prompt=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`
        (cfg_normalization off, cfg_truncation 1: its defaults)."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        images = [] if image is None else list(image) if isinstance(image, (list, tuple)) \
            else [image]
        height, width = self.condition_size(images, height, width)
        check_sides(height, width, self.vae_scale_factor * 2, "Z-Image Omni")
        flow, shape, mu = self.velocity(prompts, height=height, width=width,
                                        guidance_scale=guidance_scale,
                                        negative_prompt=negative_prompt,
                                        max_sequence_length=max_sequence_length, image=images,
                                        cache=cache)
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu)
        return run_euler(self.vae, scheduler, shape, flow, generator=make_generator(rng, seed),
                         latents=latents, image=None, mask=None, strength=1.0,
                         callback=callback, output_type=output_type,
                         device=self.transformer.device, lender=self)


def _transformer_step(transformer: ZImageOmniTransformer2DModel, latents: Tensor,
                      times: Tensor, captions: list[list[Tensor]], conditions: list[Tensor],
                      siglips: list[Tensor]) -> Tensor:
    """The Omni transformer's call of a step (StepReplay's captured function): the latents,
    the timesteps, every caption piece's states and the condition pictures' latents and
    SigLIP2 features its inputs. The clean timestep's modulations are made in the call (a
    CleanModulation of its own: nothing of a generation is closed over)."""
    return transformer(latents, times, captions, conditions, siglips)
