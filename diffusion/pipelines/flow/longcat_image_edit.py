"""LongCat-Image-Edit, as diffusers' LongCatImageEditPipeline draws it: the picture resized
(Lanczos) to about a megapixel at its aspect, each side rounded up to 16 pixels, the output
that size. Its VAE mean rides packed after the noise tokens in every transformer call (rotary
modality 2, at the text's length on), and only the noise tokens' prediction is kept; and
Qwen2.5-VL reads it at half that size with the instruction: the edit template's image pads
become the vision tower's tokens, the instruction's tokens (quoted text a character at a
time) are padded to 512, and the states from the picture's <|vision_start|> on reach the
transformer. CFG against the negative prompt (the same picture) for guidance_scale > 1,
without LongCat-Image's renorm. One prompt a call, as diffusers'.

    pipe = LongCatImageEditPipeline.from_pretrained("LongCat-Image-Edit")
    images = pipe("make it night", image=picture, guidance_scale=4.5, seed=7)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray, concatenate

from ...imaging import rgb_picture, to_unit_image
from ...models.llm import LLMTextModel
from ...models.longcat_image import LongCatImageTransformer2DModel
from ...models.longcat_image_prompt import (
    EDIT_TEMPLATE_PREFIX,
    image_positions,
    prompt_tokens,
    text_positions,
)
from ...models.qwen_vision import Qwen2_5_VisionTransformer, pixel_limits, qwen_vision_pixels
from ...models.qwen_vl_prompt import encode_with_images, expand_image_pads
from ...models.step_cache import StepCache
from ...models.vae import AutoencoderKL
from ...noise.rng import make_generator
from ...sampling.guidance import combine
from ...sampling.model_sampling import calculate_shift
from ...text.llm_tokenizer import LLMTokenizer
from ..finite import check_encoded
from .flow_memory import load_network
from .flux import pack_latents, unpack_latents
from .longcat_image import LongCatImagePipeline
from .start import StepCallback, check_call, flow_schedule, run_euler

__all__ = ["LongCatImageEditPipeline", "edit_dimensions"]

EDIT_AREA = 1024 * 1024  # the pixels the picture is resized to, as diffusers'


def edit_dimensions(width: int, height: int, area: int = EDIT_AREA) -> tuple[int, int]:
    """(width, height) of `area` pixels at the picture's aspect, each rounded up to a
    multiple of 16. diffusers: `pipeline_longcat_image_edit.calculate_dimensions`."""
    ratio = width / height
    new_width = math.sqrt(area * ratio)
    new_height = new_width / ratio
    return (int(new_width if new_width % 16 == 0 else (new_width // 16 + 1) * 16),
            int(new_height if new_height % 16 == 0 else (new_height // 16 + 1) * 16))


class LongCatImageEditPipeline(LongCatImagePipeline):
    """LongCat-Image-Edit on gpustd: LongCat-Image's parts, the text encoder's vision tower
    (`vision`) and its processor's picture sizes (`processor_config`, the folder's
    text_processor/preprocessor_config.json)."""

    def __init__(self, *, vision: Qwen2_5_VisionTransformer, processor_config: dict[str, Any],
                 area: int | None = None, **parts: Any) -> None:
        super().__init__(**parts)
        self.vision, self.area = vision, int(area or EDIT_AREA)
        self.pixel_limits = pixel_limits(processor_config)
        pad = self.tokenizer.tokenizer.token_to_id("<|image_pad|>")
        if pad is None:
            raise ValueError("the edit model's tokenizer has no <|image_pad|> token; give the "
                             "folder's own tokenizer/")
        self.image_token_id = int(pad)

    @classmethod
    def from_pretrained(cls, path: Any, *, dtype: Any = np.float32,  # type: ignore[override]
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> LongCatImageEditPipeline:
        """Load a LongCatImageEditPipeline diffusers folder onto `device` in `dtype`;
        `offload` as LongCatImagePipeline's."""
        from ...loaders.longcat_image import load_longcat_image_folder

        weights = load_longcat_image_folder(path, variant=variant)
        if weights.vision is None or weights.processor_config is None:
            raise ValueError(f"{path} is a LongCat-Image folder, not the edit model's")
        transformer, text, vision = weights.transformer, weights.text_encoder, weights.vision
        assert transformer is not None and text is not None
        device = device or default_device()
        place = {"dtype": dtype, "device": device}

        def load(build: Callable[[], Any], part: Any) -> Any:
            return load_network(build, part, device=device, offload_to_host=offload)

        encoder = load(lambda: LLMTextModel(text.config, **place), text)
        tower = load(lambda: Qwen2_5_VisionTransformer(vision.config, **place), vision)
        return cls(
            transformer=load(lambda: LongCatImageTransformer2DModel(transformer.config,
                                                                    **place), transformer),
            vae=load(lambda: AutoencoderKL(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, vision=tower, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config,
            processor_config=weights.processor_config)

    def edit_size(self, image: Any) -> tuple[int, int]:
        """(width, height) of the edited picture: `edit_dimensions` of the input's."""
        picture = rgb_picture(image)
        return edit_dimensions(picture.size[0], picture.size[1], self.area)

    def encode_edit_prompt(self, prompt: str, picture: Any) -> Tensor:
        """The states (1, 2 + picture tokens + 512, hidden) of `prompt` read with `picture`
        (the half-size one), in the transformer's dtype. diffusers:
        `LongCatImageEditPipeline.encode_prompt(prompt, image)` (its text encoder given
        `mm_token_type_ids`: the multimodal positions transformers 4 made)."""
        low, high = self.pixel_limits
        config = self.vision.config
        pixels, grids = qwen_vision_pixels(
            picture, patch_size=config["patch_size"], merge_size=config["spatial_merge_size"],
            temporal_patch_size=config["temporal_patch_size"], min_pixels=low,
            max_pixels=high, device=self.vision.device)
        prefix = expand_image_pads(EDIT_TEMPLATE_PREFIX, grids,
                                   merge=config["spatial_merge_size"])
        ids, mask, kept = prompt_tokens(self.tokenizer, [prompt], prefix_text=prefix,
                                        kept_from="<|vision_start|>")
        states = encode_with_images(self.text_encoder, self.vision, ids[0],
                                    image_token_id=self.image_token_id, pixel_values=pixels,
                                    grid_thw=grids, attention_mask=mask[0]).numpy()
        weight = self.transformer.x_embedder.weight
        return asarray(states[:, kept], dtype=weight.dtype, device=weight.device)

    def reference_latents(self, picture: Any, width: int, height: int) -> np.ndarray:
        """The picture's VAE mean, shifted and scaled into the transformer's space:
        (1, 16, h, w). diffusers: `_encode_vae_image(..., sample_mode="argmax")`."""
        vae = self.vae
        weight = vae.decoder.conv_in.weight
        mean = vae.encode(asarray(to_unit_image(picture, width, height), dtype=weight.dtype,
                                  device=weight.device))[0].numpy().astype(np.float32)
        check_encoded(mean, vae)
        shift = np.float32(vae.config.get("shift_factor") or 0.0)
        return ((mean - shift) * np.float32(vae.config["scaling_factor"])).astype(np.float32)

    def velocity(self, prompts: Sequence[str], *,  # type: ignore[override]
                 height: int | None = None, width: int | None = None, image: Any = None,
                 guidance_scale: float = 4.5, negative_prompt: str | Sequence[str] = "",
                 cache: StepCache | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """The guided transformer as `flow(x, t)` for editing `image` by `prompts` (one), the
        result height x width (default: `edit_size`, what diffusers draws; the picture is
        read at `edit_size` whatever the result's); also the latents' shape and the
        schedule's `mu`. `cache`: each pass takes a branch."""
        from PIL import Image

        if image is None or len(prompts) != 1:
            raise ValueError("LongCat-Image-Edit edits one picture by one prompt: give the "
                             "picture (the init image) and a single prompt")
        negative = negative_prompt if isinstance(negative_prompt, str) else negative_prompt[0]
        size = self.edit_size(image)
        width, height = width or size[0], height or size[1]
        picture = rgb_picture(image)
        if picture.size != size:
            picture = picture.resize(size, Image.Resampling.LANCZOS)
        seen = picture.resize((size[0] // 2, size[1] // 2), Image.Resampling.LANCZOS)
        weight = self.transformer.x_embedder.weight
        scale = self.vae_scale_factor * 2
        h, w = 2 * (height // scale), 2 * (width // scale)
        rows, columns = size[1] // scale, size[0] // scale
        reference = asarray(pack_latents(self.reference_latents(picture, *size)),
                            dtype=weight.dtype, device=weight.device)
        guided = guidance_scale > 1
        passes = [self.encode_edit_prompt(prompts[0], seen)]
        if guided:
            passes.append(self.encode_edit_prompt(negative, seen))
        length = passes[0].shape[1]
        tokens = (h // 2) * (w // 2)
        rotary = self.transformer.rotary(text_positions(length), np.concatenate([
            image_positions(h // 2, w // 2, length),
            _modality(image_positions(rows, columns, length), 2)]))
        branches = [None if cache is None else cache.branch() for _ in passes]
        # replayed unless a step cache decides on the host (the reference's tokens are an input)
        step = self.step_replay.step(self.transformer) if cache is None else None

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            packed = asarray(pack_latents(x), dtype=weight.dtype, device=weight.device)
            both = concatenate([packed, reference], axis=1)
            timestep = np.full(1, np.float32(t) / np.float32(1000), np.float32)
            preds = [self.predict(step, both, states, timestep, rotary, branch)[:, :tokens]
                     for states, branch in zip(passes, branches)]
            out = preds[0] if not guided else combine(preds[1], preds[0], None,
                                                      np.float32(guidance_scale))
            return unpack_latents(out, h, w)

        mu = calculate_shift(tokens, self.scheduler_config)
        return flow, (1, self.transformer.config["in_channels"] // 4, h, w), mu

    def __call__(self, prompt: str | Sequence[str], *,  # type: ignore[override]
                 image: Any = None, height: int | None = None, width: int | None = None,
                 negative_prompt: str | Sequence[str] = "", num_inference_steps: int = 50,
                 guidance_scale: float = 4.5, seed: int = 0, rng: str = "torch",
                 latents: np.ndarray | None = None, callback: StepCallback | None = None,
                 output_type: str = "np", cache: StepCache | None = None) -> np.ndarray:
        """The edited picture of `image` (PIL or HxWx3 uint8) by `prompt` (one): float image
        in [0, 1], (1, H, W, 3) ("np"), or the final latents ("latent"); height x width as
        `velocity`. diffusers: `LongCatImageEditPipeline(image, prompt, negative_prompt=,
        num_inference_steps=, guidance_scale=, generator=torch.Generator().manual_seed(seed),
        output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        flow, shape, mu = self.velocity(prompts, height=height, width=width, image=image,
                                        guidance_scale=guidance_scale,
                                        negative_prompt=negative_prompt, cache=cache)
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu)
        return run_euler(self.vae, scheduler, shape, flow, generator=make_generator(rng, seed),
                         latents=latents, image=None, mask=None, strength=1.0,
                         callback=callback, output_type=output_type,
                         device=self.transformer.x_embedder.weight.device, lender=self)


def _modality(positions: np.ndarray, modality: int) -> np.ndarray:
    """`positions` with their first axis (the modality) set to `modality`."""
    out = positions.copy()
    out[:, 0] = modality
    return out

