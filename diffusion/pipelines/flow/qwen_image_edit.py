"""Qwen-Image-Edit, as diffusers' QwenImageEditPipeline draws it: the reference picture,
resized to about a megapixel (`reference_area`) in whole 32-pixel steps, is read twice. Its
VAE latents ride packed after the noise tokens in every transformer call (rotary frame 1),
and only the noise tokens' prediction is kept; and Qwen2.5-VL reads it with the instruction,
its vision tower's tokens in place of the edit template's image pads, at multimodal rotary
positions, the template's first 64 tokens dropped. True CFG with the norm rescale as
Qwen-Image's, for `true_cfg_scale` > 1 with a negative prompt. Inpainting as
QwenImageEditInpaintPipeline: the picture inpainted drawn from the VAE's posterior, noised by
the strength, its unmasked part put back after every step, and that draw (not the mean) its
latent tokens as the reference.

    pipe = QwenImageEditPipeline.from_pretrained("Qwen-Image-Edit")
    images = pipe("make it night", image=picture, num_inference_steps=50,
                  true_cfg_scale=4.0, negative_prompt=" ", seed=7)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ...imaging import condition_picture, see_through_picture, to_unit_image
from ...loaders.formats.diffusers_folder import component_config
from ...loaders.qwen_image import load_qwenimage_file, load_qwenimage_folder
from ...models.llm import LLMTextModel
from ...models.qwen_image import QwenImageTransformer2DModel
from ...models.qwen_image_vae import AutoencoderKLQwenImage
from ...models.qwen_vision import Qwen2_5_VisionTransformer, pixel_limits, qwen_vision_pixels
from ...models.qwen_vl_prompt import encode_with_images, expand_image_pads
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.model_sampling import calculate_shift
from ...sampling.scheduler_loop import scheduler_loop
from ...text.llm_tokenizer import LLMTokenizer
from ..finite import check_encoded
from .flow_memory import load_network
from .flow_replay import mask_key
from .qwen_image import QwenImagePipeline, pack, true_cfg, unpack
from .start import FlowStart, StepCallback, check_call, flow_schedule

__all__ = ["EDIT_TEMPLATE", "QwenImageEditPipeline", "reference_dimensions", "reference_resize"]

EDIT_TEMPLATE = (
    "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, "
    "texture, objects, background), then explain how the user's text instruction should alter "
    "or modify the image. Generate a new image that meets the user's requirements while "
    "maintaining consistency with the original input where appropriate.<|im_end|>\n"
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{}<|im_end|>\n"
    "<|im_start|>assistant\n")
EDIT_TEMPLATE_TOKENS = 64  # the template's leading tokens whose states are dropped
IMAGE_PAD = "<|image_pad|>"
REFERENCE_AREA = 1024 * 1024  # the pixels the reference is resized to, as diffusers'


def reference_resize(picture: Any, size: tuple[int, int]) -> Any:
    """A `see_through_picture` resized (Lanczos) to `size` (width, height), then composited
    over white: diffusers' VaeImageProcessor.resize, then Qwen2VLImageProcessor's
    convert_to_rgb (an RGBA picture's colours weighted by its alpha in the resize). Both the
    vision tower and the VAE read it (diffusers' VAE takes an RGBA picture as four channels,
    which it cannot read)."""
    from PIL import Image

    if picture.size != size:
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    return condition_picture(picture)


def reference_dimensions(width: int, height: int, area: int = 1024 * 1024) -> tuple[int, int]:
    """(width, height) of `area` pixels at the picture's aspect, each rounded to a multiple
    of 32. diffusers: `pipeline_qwenimage_edit.calculate_dimensions(area, width / height)`."""
    ratio = width / height
    new_width = math.sqrt(area * ratio)
    new_height = new_width / ratio
    return round(new_width / 32) * 32, round(new_height / 32) * 32


class QwenImageEditPipeline(QwenImagePipeline):
    """Qwen-Image-Edit on gpustd: QwenImagePipeline's parts, the text encoder's vision tower
    (`vision`) and the processor's picture sizes (`processor_config`, the folder's
    processor/preprocessor_config.json)."""

    def __init__(self, *, vision: Qwen2_5_VisionTransformer, processor_config: dict[str, Any],
                 reference_area: int | None = None, **parts: Any) -> None:
        super().__init__(**parts)
        self.vision = vision
        self.reference_area = int(reference_area or REFERENCE_AREA)
        self.pixel_limits = pixel_limits(processor_config)
        pad = self.tokenizer.tokenizer.token_to_id(IMAGE_PAD)
        if pad is None:
            raise ValueError(f"the edit model's tokenizer has no {IMAGE_PAD} token; give the "
                             "folder's own tokenizer/")
        self.image_token_id = int(pad)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,  # type: ignore[override]
                        device: Device | None = None, variant: str | None = None,
                        transformer_file: str | os.PathLike[str] | None = None,
                        offload: bool = False) -> QwenImageEditPipeline:
        """Load a QwenImageEditPipeline diffusers folder onto `device` in `dtype`;
        `transformer_file`: a single-file edit transformer (ComfyUI's
        `qwen_image_edit_2509_bf16.safetensors`, an fp8 one, or a GGUF, kept quantized;
        `load_qwenimage_file`) in place of the folder's, which need then hold none;
        `offload`: each network goes to host memory as soon as it is loaded (flow_memory)."""
        skip = ("transformer",) if transformer_file is not None else ()
        weights = load_qwenimage_folder(path, variant=variant, skip=skip)
        if weights.vision is None or weights.processor_config is None:
            raise ValueError(f"{path} is a Qwen-Image folder, not an edit model's; load it as "
                             "Qwen-Image (a single-file edit transformer needs a "
                             "Qwen-Image-Edit folder as --base: its vision tower reads the "
                             "pictures)")
        if transformer_file is not None:
            weights.transformer = load_qwenimage_file(
                transformer_file, config=component_config(path, "transformer"))
        transformer, text, vision = weights.transformer, weights.text_encoder, weights.vision
        assert transformer is not None and text is not None
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        # the text encoder and its vision tower first: with `offload` they have left the GPU
        # when the transformer loads
        encoder = load(lambda: LLMTextModel(text.config, **place), text)
        tower = load(lambda: Qwen2_5_VisionTransformer(vision.config, **place), vision)
        return cls(
            transformer=load(lambda: QwenImageTransformer2DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKLQwenImage(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, vision=tower, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config,
            processor_config=weights.processor_config)

    def reference(self, image: Any) -> tuple[Any, int, int]:
        """The reference picture (PIL or HxWx3 / HxWx4 uint8) resized (Lanczos) to
        `reference_dimensions` of `reference_area`, and that width and height."""
        picture = see_through_picture(image, "the reference picture")
        width, height = reference_dimensions(picture.size[0], picture.size[1],
                                             area=self.reference_area)
        return reference_resize(picture, (width, height)), width, height

    def pictures(self, image: Any) -> tuple[list[Any], list[tuple[Any, int, int]]]:
        """The pictures Qwen2.5-VL reads, and the (picture, width, height) the VAE encodes:
        the reference at `reference_area` for both."""
        picture, width, height = self.reference(image)
        return [picture], [(picture, width, height)]

    def prompt_text(self, prompt: str, count: int) -> str:
        """The template around the instruction, with the pictures' image slots."""
        return EDIT_TEMPLATE.format(prompt)

    def encode_edit_prompt(self, prompts: Sequence[str], pictures: Sequence[Any]
                           ) -> tuple[Tensor, Any]:
        """Each instruction read with the pictures (one prompt at a time, unpadded), the
        first 64 states dropped, zero-padded to the longest: (B, L, hidden) float32 and the
        mask (B, L), None when no row is padded. diffusers: `QwenImageEditPipeline.
        encode_prompt(prompt, image)`."""
        low, high = self.pixel_limits
        config = self.vision.config
        read = [qwen_vision_pixels(picture, patch_size=config["patch_size"],
                                   merge_size=config["spatial_merge_size"],
                                   temporal_patch_size=config["temporal_patch_size"],
                                   min_pixels=low, max_pixels=high, device=self.vision.device)
                for picture in pictures]
        pixels = np.concatenate([one[0] for one in read])
        grids = np.concatenate([one[1] for one in read])
        rows = []
        for prompt in prompts:
            text = expand_image_pads(self.prompt_text(prompt, len(pictures)), grids,
                                     merge=config["spatial_merge_size"])
            ids = np.asarray(self.tokenizer.tokenizer.encode(text).ids, np.int64)
            states = encode_with_images(self.text_encoder, self.vision, ids,
                                        image_token_id=self.image_token_id,
                                        pixel_values=pixels, grid_thw=grids)
            rows.append(states.numpy()[0, EDIT_TEMPLATE_TOKENS:])
        length = max(len(r) for r in rows)
        out = np.zeros((len(rows), length, rows[0].shape[-1]), np.float32)
        mask = np.zeros((len(rows), length), np.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)], mask[i, : len(r)] = r, 1
        return asarray(out, device=self.transformer.device), None if mask.all() else mask

    def reference_latents(self, picture: Any, width: int, height: int) -> np.ndarray:
        """The picture's VAE mean (no random draw), normalized by latents_mean / latents_std:
        (1, C, h, w). diffusers: `_encode_vae_image(..., sample_mode="argmax")`."""
        vae = self.vae
        mean = vae.encode(asarray(to_unit_image(picture, width, height),
                                 dtype=vae.decoder.conv_in.weight.dtype,
                                 device=vae.device))[0].numpy().astype(np.float32)
        check_encoded(mean, vae)
        shape = (1, -1, 1, 1)
        center = np.asarray(self.vae.config["latents_mean"], np.float32).reshape(shape)
        spread = np.asarray(self.vae.config["latents_std"], np.float32).reshape(shape)
        return ((mean - center) / spread).astype(np.float32)

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,  # type: ignore[override]
                 true_cfg_scale: float = 4.0, negative_prompt: str | Sequence[str] | None = None,
                 max_sequence_length: int = 512, cache: StepCache | None = None,
                 image: Any = None, first_latents: np.ndarray | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """QwenImagePipeline.velocity with the reference `image` (None: Qwen-Image's flow,
        as the edit model draws without one; a list: the pictures of an Edit Plus model):
        its latent tokens after the noise tokens in every call, the prompt read with it.
        True CFG needs a negative prompt (None: none, as diffusers). `first_latents`
        (1, C, h, w): the first reference's tokens in place of its VAE mean (inpainting: the
        picture inpainted's draw, as QwenImageEditInpaintPipeline reads it)."""
        if image is None:
            return super().velocity(prompts, height=height, width=width,
                                    true_cfg_scale=true_cfg_scale,
                                    negative_prompt=negative_prompt or "",
                                    max_sequence_length=max_sequence_length, cache=cache)
        scale = self.vae_scale_factor * 2
        if height < scale or width < scale:
            raise ValueError(f"height and width must be at least {scale}, got {height}x{width}")
        batch = len(prompts)
        read, encoded = self.pictures(image)
        positive = self.encode_edit_prompt(prompts, read)
        negative = None
        if true_cfg_scale > 1 and negative_prompt is not None:
            negatives = ([negative_prompt] * batch if isinstance(negative_prompt, str)
                         else list(negative_prompt))
            negative = self.encode_edit_prompt(negatives, read)
        latents = [self.reference_latents(*one) for one in encoded[first_latents is not None:]]
        if first_latents is not None:
            latents.insert(0, first_latents)
        tokens_after = np.repeat(np.concatenate([pack(x) for x in latents], axis=1), batch, 0)
        references = [(int(x.shape[2]) // 2, int(x.shape[3]) // 2) for x in latents]
        h, w = 2 * (int(height) // scale), 2 * (int(width) // scale)
        noise_tokens = (h // 2) * (w // 2)
        dtype, device = self.transformer.dtype, self.transformer.device
        branches = [None, None] if cache is None else [
            cache.branch() for _ in range(1 + (negative is not None))]
        # replayed (the references' tokens are part of the packed input) unless a step cache
        step = self.replayed_step((positive, negative), (h // 2, w // 2), references,
                                  eager=cache is not None)

        def predict(packed: Tensor, t: np.ndarray, text: tuple[Tensor, Any], i: int
                    ) -> np.ndarray:
            if step is not None:
                out = step(packed, text[0], asarray(t, device=device), h // 2, w // 2,
                           mask_key(text[1]), tuple(references))
            else:
                out = self.transformer(packed, text[0], t, h // 2, w // 2, text[1],
                                       cache=branches[i], references=references)
            return out.numpy().astype(np.float32)[:, :noise_tokens]

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            timestep = np.full(len(x), np.float32(t) / np.float32(1000), np.float32)
            packed = asarray(np.concatenate([pack(x), tokens_after], axis=1), dtype=dtype,
                             device=device)
            pred = predict(packed, timestep, positive, 0)
            if negative is not None:
                pred = true_cfg(pred, predict(packed, timestep, negative, 1), true_cfg_scale)
            return unpack(pred, h, w)

        mu = calculate_shift(noise_tokens, self.scheduler_config)
        channels = self.transformer.config["in_channels"] // 4
        return flow, (batch, channels, h, w), mu

    def edit_size(self, image: Any) -> tuple[int, int]:
        """The (width, height) an edit draws at by default: the reference's, floored to the
        latents' 2x2 patches. diffusers: the call's default height and width."""
        _, width, height = self.reference(image)
        scale = self.vae_scale_factor * 2
        return width // scale * scale, height // scale * scale


    def __call__(self, prompt: str | Sequence[str], *,  # type: ignore[override]
                 image: Any = None, height: int | None = None, width: int | None = None,
                 num_inference_steps: int = 50, true_cfg_scale: float = 4.0,
                 negative_prompt: str | Sequence[str] | None = None, seed: int = 0,
                 rng: str = "torch", max_sequence_length: int = 512,
                 latents: np.ndarray | None = None, callback: StepCallback | None = None,
                 output_type: str = "np", cache: StepCache | None = None,
                 init_image: Any = None, mask_image: Any = None,
                 strength: float = 1.0) -> np.ndarray:
        """Edits of `image` (PIL or HxWx3 uint8) by the instruction `prompt` (one or a
        list): float images in [0, 1] (B, height, width, 3) ("np") or the final latents
        ("latent"); height and width default to the reference's (`edit_size`: an Edit Plus
        model's last one; inpainting: the init image's, as diffusers draws it). diffusers:
        `QwenImageEditPipeline(image=, prompt=, negative_prompt=, true_cfg_scale=,
        num_inference_steps=, generator=torch.Generator().manual_seed(seed),
        output_type="np").images`. Inpainting: `init_image` (height x width) the picture
        inpainted with `mask_image` (white = repaint), drawn from the posterior, noised to
        the first sigma `strength` keeps, the kept part put back after every step, and
        that draw the first reference's tokens (`first_latents`). diffusers:
        `QwenImageEditInpaintPipeline(image=, mask_image=, strength=, ...)`, whose picture
        is both (give `image=init_image`, at the reference's size: diffusers draws there)."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        if image is None:
            raise ValueError("Qwen-Image-Edit edits a picture: give it as the image (the CLI's "
                             "--init-image, img2img's init_images)")
        # inpainting draws at the picture inpainted's size, as QwenImageEditInpaintPipeline
        default_width, default_height = self.edit_size(image if init_image is None
                                                       else init_image)
        scale = self.vae_scale_factor * 2
        height = (height or default_height) // scale * scale
        width = (width or default_width) // scale * scale
        # 1. the schedule: sigmas 1 .. 1/n, shifted by the picture's size; the start: noise,
        # or the picture inpainted drawn and noised (its draws before the flow's tokens)
        h, w = 2 * (height // scale), 2 * (width // scale)
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps,
                                  calculate_shift((h // 2) * (w // 2), self.scheduler_config))
        start = FlowStart(self.vae, scheduler,
                          (len(prompts), self.transformer.config["in_channels"] // 4, h, w),
                          generator=make_generator(rng, seed), latents=latents,
                          image=init_image, mask=mask_image, strength=strength,
                          encode=self.encode_image, scale_factor=self.vae_scale_factor)
        # 2. conditioning: the reference's latents and the instruction read with it
        flow, _, _ = self.velocity(
            prompts, height=height, width=width, true_cfg_scale=true_cfg_scale,
            negative_prompt=negative_prompt, max_sequence_length=max_sequence_length,
            cache=cache, image=image,
            first_latents=None if init_image is None else start.image_latents[:1])
        # 3. Euler steps along the flow; the pictures out of the latent space
        x = scheduler_loop(start.latents, start.timesteps, scheduler,
                           lambda x, t, i: (flow(x, t), None), dtype=np.float32,
                           after_step=lambda i, x: start.blend(x, i), callback=callback)
        return x if output_type == "latent" else self.decode(x)
