"""JoyImage Edit, as diffusers' JoyImageEditPipeline draws it: the picture to edit scaled to cover
the output's size (bilinear, sides rounded up) and centre-cropped to it; Qwen3-VL reads it
with the instruction (joyimage_prompt); Wan 2.1's VAE encodes it (the posterior's mean, where
diffusers draws from the posterior: the same but for the draw's noise) into normalized
latents that ride as a second frame behind the noise in every transformer call (the drawn
frame first); CFG against the negative prompt ("" when none, read with the same picture) for
guidance_scale > 1, the guided velocity rescaled at every latent to the prompt's velocity's
norm over the channels; FlowMatchEulerDiscreteScheduler's own schedule of the folder's
constant shift; the VAE decodes the drawn frame. Without a picture it draws from the prompt
alone (one frame, the text-only template). One prompt a call, as diffusers' pictures come.

The output's size: diffusers snaps it to the 1024-pixel bucket (BUCKETS) whose aspect is
nearest the picture's (the given height and width's where both are given); here a given
height and width are kept as they are (multiples of 16), and `bucket` gives diffusers' size.

    pipe = JoyImageEditPipeline.from_pretrained("JoyAI-Image-Edit-Diffusers")
    images = pipe("add wings to the astronaut", image=picture, seed=7)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ...imaging import rgb_picture, to_unit_image
from ...loaders.joyimage import load_joyimage_folder
from ...models.joyimage import JoyImageEditTransformer3DModel
from ...models.joyimage_prompt import encode_text, encode_with_pictures
from ...models.llm import LLMTextModel
from ...models.qwen3_vision import Qwen3VLVisionModel
from ...models.qwen21_prompt import read_pictures
from ...models.wan_vae import AutoencoderKLWan
from ...noise.rng import make_generator
from ...sampling.scheduler_loop import scheduler_loop
from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ...text.llm_tokenizer import LLMTokenizer
from ..finite import check_encoded
from .flow_memory import load_network
from .start import StepCallback, check_call, check_sides

__all__ = ["BUCKETS", "JoyImageEditPipeline", "bucket", "cover_crop", "rescaled_cfg"]

# diffusers' JoyImage BUCKETS[1024] as (height, width): about a megapixel, sides of 64
BUCKETS = (
    (512, 1792), (512, 1856), (512, 1920), (512, 1984), (512, 2048), (576, 1600),
    (576, 1664), (576, 1728), (576, 1792), (640, 1472), (640, 1536), (640, 1600),
    (704, 1344), (704, 1408), (704, 1472), (768, 1216), (768, 1280), (768, 1344),
    (832, 1152), (832, 1216), (896, 1088), (896, 1152), (960, 1024), (960, 1088),
    (1024, 960), (1024, 1024), (1088, 896), (1088, 960), (1152, 832), (1152, 896),
    (1216, 768), (1216, 832), (1280, 768), (1344, 704), (1344, 768), (1408, 704),
    (1472, 640), (1472, 704), (1536, 640), (1600, 576), (1600, 640), (1664, 576),
    (1728, 576), (1792, 512), (1792, 576), (1856, 512), (1920, 512), (1984, 512),
    (2048, 512))
MULTIPLE = 16  # the VAE's 8 pixels a latent times the transformer's 2x2 patches


def bucket(width: int, height: int, buckets: Sequence[tuple[int, int]] = BUCKETS
           ) -> tuple[int, int]:
    """(width, height) of the bucket of `buckets` ((height, width) each) whose aspect is
    nearest height / width (the first of equals). diffusers: `find_best_bucket(height, width,
    1024)`."""
    h, w = min(buckets, key=lambda hw: abs(hw[0] / hw[1] - height / width))
    return w, h


def cover_crop(picture: Any, width: int, height: int) -> Any:
    """`picture` (PIL) scaled bilinearly to cover width x height (each side rounded up), then
    its centre cropped to it. diffusers: `JoyImageEditImageProcessor.resize_center_crop`."""
    from PIL import Image

    w, h = picture.size
    scale = max(height / h, width / w)
    size = (math.ceil(w * scale), math.ceil(h * scale))
    picture = picture.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return picture.crop((left, top, left + width, top + height))


def rescaled_cfg(cond: np.ndarray, uncond: np.ndarray, scale: float) -> np.ndarray:
    """uncond + scale (cond - uncond), rescaled at every latent to cond's norm over the
    channels (axis 1). diffusers: JoyImageEditPipeline's guidance with its rescale."""
    guided = uncond + np.float32(scale) * (cond - uncond)
    ratio = (np.linalg.norm(cond, axis=1, keepdims=True)
             / np.maximum(np.linalg.norm(guided, axis=1, keepdims=True), np.float32(1e-6)))
    return (guided * ratio).astype(np.float32)


class JoyImageEditPipeline:
    """JoyImage Edit on gpustd. Components as diffusers names them (`vision`: the text
    encoder's vision tower); `scheduler_config` is the folder's scheduler_config.json,
    `processor_config` its processor/preprocessor_config.json (None: Qwen3-VL's); `plus`:
    JoyImage Edit Plus (JoyImageEditPlusPipeline): several pictures, each read at its own
    bucket (`buckets`), the output at the last one's unless given, the negative prompt " "
    where none is given."""

    def __init__(self, *, transformer: JoyImageEditTransformer3DModel, vae: AutoencoderKLWan,
                 text_encoder: LLMTextModel, vision: Qwen3VLVisionModel | None,
                 tokenizer: LLMTokenizer, scheduler_config: dict[str, Any],
                 processor_config: dict[str, Any] | None = None, plus: bool = False,
                 modules: Sequence[str] = ()) -> None:
        self.transformer, self.vae, self.vision = transformer, vae, vision
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.processor_config, self.plus = processor_config, plus
        self.buckets: Sequence[tuple[int, int]] = BUCKETS
        self.modules = list(modules)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> JoyImageEditPipeline:
        """Load a JoyImage Edit diffusers folder (`load_joyimage_folder`) onto `device` in
        `dtype`; `offload`: each network goes to host memory as soon as it is loaded, for a
        memory mode to bring in as it runs (flow_memory)."""
        weights = load_joyimage_folder(path, variant=variant)
        transformer, text = weights.transformer, weights.text_encoder
        assert transformer is not None and text is not None
        wanted = transformer.config.get("text_dim", 4096)
        if wanted != text.config["hidden_size"]:
            raise ValueError(f"the text encoder's states are {text.config['hidden_size']} "
                             f"wide, the transformer reads {wanted}: give the Qwen3-VL text "
                             "encoder of the JoyImage folder")
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        encoder = load(lambda: LLMTextModel(text.config, **place), text)
        tower = weights.vision
        # the Plus model never turns the text (its config's rope_type is not read)
        config = {**transformer.config, **({"rope_type": "rope"} if weights.plus else {})}
        return cls(
            transformer=load(lambda: JoyImageEditTransformer3DModel(config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKLWan(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            vision=None if tower is None else load(
                lambda: Qwen3VLVisionModel(tower.config, **place), tower),
            scheduler_config=weights.scheduler_config,
            processor_config=weights.processor_config, plus=weights.plus)

    def prompt_states(self, prompts: Sequence[str], pictures: Sequence[Any]) -> list[Tensor]:
        """Each prompt's states through the transformer's text projection, read with
        `pictures` (the vision tower run once for all) or, none, without one."""
        if not pictures:
            states = [encode_text(self.text_encoder, self.tokenizer, p) for p in prompts]
        else:
            if self.vision is None:
                raise ValueError("the folder's text encoder has no vision tower: JoyImage "
                                 "Edit reads the picture with Qwen3-VL's")
            read = read_pictures(self.vision, pictures, processor_config=self.processor_config)
            states = [encode_with_pictures(self.text_encoder, self.tokenizer, p, read)
                      for p in prompts]
        return [self.transformer.prepare_text(s[None]) for s in states]

    def reference_latents(self, picture: Any) -> np.ndarray:
        """The picture's normalized VAE mean (1, C, 1, h, w)."""
        vae = self.vae
        pixels = to_unit_image(picture, *picture.size)[:, :, None]
        mean, _ = vae.encode(asarray(pixels, dtype=vae.post_quant_conv.weight.dtype,
                                     device=vae.device))
        latents = vae.normalize(mean).numpy().astype(np.float32)
        check_encoded(latents, vae)
        return latents  # type: ignore[no-any-return]

    def velocity(self, prompt: str, *, images: Sequence[Any], height: int, width: int,
                 guidance_scale: float, negative_prompt: str
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...]]:
        """The guided transformer as `flow(x, t)` for x (1, C, 1, h, w) float32 latents of
        the drawn picture and t the scheduler's timestep, and the latents' shape. `images`:
        the pictures to edit (one; Plus: any number), each fitted to the output (Plus: to its
        own bucket)."""
        pictures = [rgb_picture(p) for p in images]
        pictures = [cover_crop(p, *(bucket(p.size[0], p.size[1], self.buckets) if self.plus
                                    else (width, height))) for p in pictures]
        guided = guidance_scale > 1
        passes = self.prompt_states([prompt, negative_prompt] if guided else [prompt],
                                    pictures)
        references = [self.reference_latents(p) for p in pictures]
        factor = self.vae.spatial_factor

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            parts = [x, *references]
            timestep = np.full(1, t, np.float32)
            preds = [self.transformer(parts, timestep, text)[0] for text in passes]
            return preds[0] if not guided else rescaled_cfg(preds[0], preds[1],
                                                            guidance_scale)

        shape = (1, self.transformer.config["in_channels"], 1, height // factor,
                 width // factor)
        return flow, shape

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Pictures (B, H, W, 3) in [0, 1] of the drawn frame's normalized latents."""
        vae = self.vae
        z = vae.denormalize(asarray(latents, dtype=vae.post_quant_conv.weight.dtype,
                                    device=vae.device))
        video = vae.decode(z).numpy().astype(np.float32)
        return np.clip(video[:, :, 0] / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)

    def __call__(self, prompt: str | Sequence[str], *, image: Any = None,
                 height: int | None = None, width: int | None = None,
                 negative_prompt: str | None = None, num_inference_steps: int = 40,
                 guidance_scale: float = 4.0, seed: int = 0, rng: str = "torch",
                 latents: np.ndarray | None = None, callback: StepCallback | None = None,
                 output_type: str = "np") -> np.ndarray:
        """The edit of `image` (PIL or HxWx3 uint8; Plus: a list of them; None: a picture of
        the prompt alone) by `prompt` (one): float images in [0, 1], (1, H, W, 3) ("np"), or
        the final latents (1, C, 1, h, w) ("latent"); height x width: both given (multiples of
        16), else the bucket of the (last) picture's aspect (a square without one). `seed` and
        `rng` ("torch", as diffusers; "numpy") draw the starting noise unless `latents` is
        given; `callback(done, total, latents)` after every step (False stops). diffusers:
        `JoyImageEditPipeline(image=, prompt=, negative_prompt=, num_inference_steps=,
        guidance_scale=, generator=torch.Generator().manual_seed(seed),
        output_type="np").images` (JoyImageEditPlusPipeline's `images=`)."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        if len(prompts) != 1:
            raise ValueError(f"JoyImage Edit draws one prompt a call, got {len(prompts)}")
        images = [] if image is None else list(image) if isinstance(image, (list, tuple)) \
            else [image]
        if len(images) > 1 and not self.plus:
            raise ValueError(f"JoyImage Edit edits one picture, got {len(images)}; several "
                             "are JoyImage Edit Plus's")
        if (height is None) != (width is None):
            raise ValueError("give both height and width, or neither (the picture's bucket)")
        if height is None or width is None:
            size = rgb_picture(images[-1]).size if images else (1024, 1024)
            width, height = bucket(size[0], size[1], self.buckets)
        check_sides(height, width, MULTIPLE, "JoyImage Edit")
        if negative_prompt is None:  # Plus reads a space where diffusers' builds the default
            negative_prompt = " " if self.plus else ""
        flow, shape = self.velocity(prompts[0], images=images, height=height, width=width,
                                    guidance_scale=guidance_scale,
                                    negative_prompt=negative_prompt)
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(num_inference_steps)
        scheduler.set_begin_index(0)
        start = make_generator(rng, seed).standard_normal(shape) if latents is None else latents
        start = np.asarray(start, np.float32)
        if start.shape != shape:
            raise ValueError(f"latents must have shape {shape}, got {start.shape}")
        x = scheduler_loop(start, scheduler.timesteps, scheduler,
                           lambda x, t, i: (flow(x, float(t)), None), dtype=np.float32,
                           callback=callback)
        return x if output_type == "latent" else self.decode(x)
