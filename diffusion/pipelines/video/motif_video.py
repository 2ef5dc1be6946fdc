"""Motif Technologies' Motif-Video (2B, text or image to video), as diffusers'
MotifVideoPipeline draws it: T5Gemma 2's encoder states of the prompt (models.t5gemma2, each
prompt at its kept tokens: diffusers pads to 512 and masks the padding out, the same states)
condition the Motif-Video transformer (models.motif_video) over Wan 2.1 VAE latents (8x
smaller, 4x fewer frames, normalised by the VAE's latents_mean / latents_std), whose input
channels also hold a first-frame condition and its mask (zeros for text-to-video). The
folder's FlowMatchEulerDiscreteScheduler steps from noise over sigmas linspace(1, 1/n, n)
shifted by the video's token count (FLUX's mu); its guider's classifier-free guidance,
`uncond + scale (cond - uncond)` within its start / stop fraction of the steps, the
negative prompt "" unless given. With the torch RNG a seed gives diffusers' video
(`generator=torch.Generator("cpu").manual_seed(seed)`). Image-to-video
(MotifVideoImage2VideoPipeline's, the same weights): the picture, resized (Lanczos) to the
video's size, is drawn from the VAE's posterior as the condition's first latent frame (its mask
1 there), and the text encoder's SigLIP tower reads it (transformers' Pillow backend: the frame
back to 8 bits, bicubic to SigLIP's size) for the image tokens before the prompt's.

The memory modes (--medvram, --lowvram, --max-vram) and `offload` are the flow video
families' (FlowVideoPipeline over flow_memory: T5Gemma 2 and its SigLIP tower one unit, the
transformer whole or its dual- and single-stream blocks streamed, the VAE); no network runs
from a capture, so the frames are the plain mode's, bitwise. LoRAs patch the transformer, its
diffusers/PEFT `transformer.` names (diffusers' MotifVideoPipeline has no LoRA loader).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ...imaging import rgb_picture, to_unit_image
from ...loaders.motif_video import load_motif_video_folder
from ...models.motif_video import MotifVideoTransformer3DModel
from ...models.redux import SiglipVisionModel
from ...models.t5gemma2 import T5Gemma2TextModel
from ...models.wan_vae import AutoencoderKLWan
from ...noise.rng import make_generator
from ...sampling.model_sampling import calculate_shift
from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ...text.llm_tokenizer import LLMTokenizer
from ..flow.flow_memory import MemoryLayout, load_network
from ..flow.redux import siglip_pixels
from ..observer import StepCallback
from .flow_video import FlowVideoPipeline, prompt_list
from .helios_image import _posterior_sample
from .wan_vae_passes import WanVaePasses

__all__ = ["MotifVideoPipeline", "checked_guider", "motif_video_layout"]

_GUIDER = {"guidance_scale": 7.5, "guidance_rescale": 0.0, "use_original_formulation": False,
           "start": 0.0, "stop": 1.0, "enabled": True}


def checked_guider(config: dict[str, Any]) -> dict[str, Any]:
    """The folder's guider config with diffusers' ClassifierFreeGuidance defaults;
    ValueError in one line for another guider or a rescale, which are not run here."""
    kind = config.get("_class_name", "ClassifierFreeGuidance")
    if kind != "ClassifierFreeGuidance":
        raise ValueError(f"guider/guider_config.json names a {kind}; Motif-Video runs here "
                         "with ClassifierFreeGuidance only")
    cfg = {**_GUIDER, **{k: v for k, v in config.items() if not k.startswith("_")}}
    if cfg["guidance_rescale"]:
        raise ValueError(f"the guider's guidance_rescale {cfg['guidance_rescale']} is not "
                         "supported; set it to 0")
    return cfg


def motif_video_layout(pipe: Any) -> MemoryLayout:
    """What the memory modes (flow_memory) move of a Motif-Video pipeline: T5Gemma 2 and its
    SigLIP tower (image to video) as one unit, the transformer (brought in by `encode_text`
    too, the context embedder's pass) and its dual- and single-stream blocks, the VAE."""
    readers = [(pipe.text_encoder, "encode")]
    if pipe.image_encoder is not None:
        readers.append((pipe.image_encoder, "forward"))
    model = pipe.transformer
    return MemoryLayout(transformer=model,
                        blocks=(model.transformer_blocks, model.single_transformer_blocks),
                        text_encoders=tuple(m for m, _ in readers), text_calls=tuple(readers),
                        vae=pipe.vae, transformer_calls=("encode_text",))


class MotifVideoPipeline(FlowVideoPipeline):
    """Motif-Video txt2vid and img2vid on gpustd. Components as diffusers names them;
    `scheduler_config` and `guider_config` are the folder's; `image_encoder` (the text
    encoder's SigLIP tower) and `processor_config` (feature_extractor/) an image-to-video
    folder's; `offload`: one network's weights on the GPU at a time; the memory modes:
    `set_memory_mode`."""

    family = "Motif-Video"
    vae: AutoencoderKLWan
    decode = WanVaePasses.decode  # the VAE's latents_mean / latents_std, not a scaling factor

    def __init__(self, *, transformer: MotifVideoTransformer3DModel, vae: AutoencoderKLWan,
                 text_encoder: T5Gemma2TextModel, tokenizer: LLMTokenizer,
                 scheduler_config: dict[str, Any], guider_config: dict[str, Any],
                 image_encoder: SiglipVisionModel | None = None,
                 processor_config: dict[str, Any] | None = None, offload: bool = False
                 ) -> None:
        self.transformer, self.vae = transformer, vae
        self.image_encoder, self.processor_config = image_encoder, processor_config
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        kind = self.scheduler_config.get("_class_name", "FlowMatchEulerDiscreteScheduler")
        if kind != "FlowMatchEulerDiscreteScheduler":
            raise ValueError(f"scheduler/scheduler_config.json names a {kind}; Motif-Video "
                             "runs here with FlowMatchEulerDiscreteScheduler")
        self.guider = checked_guider(guider_config)
        self.offload, self.image_to_video = offload, image_encoder is not None
        self._memory = None  # set_memory_mode's

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> MotifVideoPipeline:
        """Load a Motif-Video diffusers folder (`load_motif_video_folder`) onto `device` in
        `dtype` (the text encoder's residual stream float32 whatever it is); `offload`: each
        network goes to host memory as soon as it is loaded, and comes to the GPU only while
        it runs."""
        weights = load_motif_video_folder(path, variant=variant)
        transformer, text = weights.transformer, weights.text_encoder
        assert transformer is not None and text is not None and weights.vae is not None
        vae_config, vision = weights.vae.config, weights.vision
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        i2v = vision is not None and weights.feature_extractor is not None
        return cls(
            image_encoder=load(lambda: SiglipVisionModel(vision.config, **place), vision)
            if i2v and vision is not None else None,
            processor_config=weights.feature_extractor if i2v else None,
            text_encoder=load(lambda: T5Gemma2TextModel(text.config, **place), text),
            transformer=load(lambda: MotifVideoTransformer3DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKLWan(vae_config, **place), weights.vae),
            tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config, guider_config=weights.guider_config,
            offload=offload)

    def networks(self) -> tuple[Any, ...]:
        readers = () if self.image_encoder is None else (self.image_encoder,)
        return (self.text_encoder, *readers, self.transformer, self.vae)

    def memory_layout(self) -> MemoryLayout:
        return motif_video_layout(self)

    @property
    def size_multiple(self) -> int:
        """What height and width must be multiples of: the VAE's factor times the patch."""
        return int(self.vae.spatial_factor) * int(self.transformer.config["patch_size"])

    def contexts(self, prompts: Sequence[str], max_sequence_length: int,
                 image_embeds: np.ndarray | None = None) -> list[Tensor]:
        """Each prompt's transformer context (1, n, dim): its kept tokens (the first
        max_sequence_length, as diffusers truncates) through T5Gemma 2 and the
        transformer's context_embedder, SigLIP's picture states projected before them."""
        ids, mask = self.tokenizer(prompts, max_sequence_length)
        with self.on_gpu(self.text_encoder):
            states = self.text_encoder.encode(ids, mask)
        with self.on_gpu(self.transformer):
            return [self.transformer.encode_text(s, image_embeds) for s in states]

    def guided(self, step: int | None = None, steps: int = 0) -> bool:
        """Whether the guider runs the negative prompt at `step` of `steps` (None: at some
        step, whether to encode it at all). diffusers: ClassifierFreeGuidance._is_cfg_enabled
        (`num_conditions` before the loop)."""
        g = self.guider
        near = 0.0 if g["use_original_formulation"] else 1.0
        within = step is None or int(g["start"] * steps) <= step < int(g["stop"] * steps)
        return bool(g["enabled"]) and within and not math.isclose(g["guidance_scale"], near)

    def first_frame(self, image: Any, shape: tuple[int, ...], generator: Any
                    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The condition channels (1, C + 1, F, h, w) of the picture (its posterior's draw
        at frame 0, the mask 1 there; zeros without a picture or with one latent frame) and
        SigLIP's states of it (None there). diffusers:
        `MotifVideoImage2VideoPipeline._prepare_first_frame_conditioning`."""
        condition = np.zeros((1, shape[1] + 1, *shape[2:]), np.float32)
        if image is None or shape[2] == 1:
            return condition, None
        if self.image_encoder is None or self.processor_config is None:
            raise ValueError("this Motif-Video folder has no SigLIP tower or feature_extractor "
                             "for a picture; use a MotifVideoImage2VideoPipeline folder")
        if self.transformer.config["image_embed_dim"] is None:
            raise ValueError("this Motif-Video transformer takes no picture (no image_embed_dim)")
        height, width = shape[3] * self.vae.spatial_factor, shape[4] * self.vae.spatial_factor
        with self.on_gpu(self.vae):
            condition[:, :shape[1], :1] = _posterior_sample(
                self.vae, to_unit_image(image, width, height)[:, :, None], generator)
        condition[:, shape[1], 0] = 1.0
        pixels = siglip_pixels(_eight_bits(image, width, height), self.processor_config)
        with self.on_gpu(self.image_encoder):
            return condition, self.image_encoder(pixels).numpy().astype(np.float32)

    def _flow(self, x: Tensor, t: float, context: Tensor, image_tokens: int) -> np.ndarray:
        """The transformer's velocity (1, C, F, h, w) float32 of one sample at t."""
        return self.transformer(x, [t], context=context, image_tokens=image_tokens
                                ).numpy().astype(np.float32)  # type: ignore[no-any-return]

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | None = None,
                 height: int = 736, width: int = 1280, num_frames: int = 121,
                 num_inference_steps: int = 50, guidance_scale: float | None = None,
                 seed: int = 0, rng: str = "torch", max_sequence_length: int = 512,
                 latents: np.ndarray | None = None, image: Any = None,
                 callback: StepCallback | None = None, output_type: str = "np") -> np.ndarray:
        """Videos (B, num_frames, height, width, 3) in [0, 1] ("np") or the final latent
        video ("latent"). `guidance_scale`: the guider's unless given. `seed` and `rng`
        ("torch", as diffusers; "numpy") draw the noise unless `latents` is given. `image`
        (PIL or HxWx3 uint8): image-to-video, the picture the first frame.
        `callback(done, total, latents)` after every step (False stops). diffusers:
        `MotifVideoPipeline(prompt, negative_prompt=, height=, width=, num_frames=,
        num_inference_steps=, generator=, output_type="np").frames`."""
        prompts = prompt_list(prompt)
        if output_type not in ("np", "latent"):
            raise ValueError(f"output_type must be 'np' or 'latent', got {output_type!r}")
        multiple, temporal = self.size_multiple, int(self.vae.temporal_factor)
        if height % multiple or width % multiple or height < multiple or width < multiple:
            raise ValueError(f"width and height must be multiples of {multiple} for "
                             f"Motif-Video, got {width}x{height}")
        if num_frames < 1 or (num_frames - 1) % temporal:
            raise ValueError(f"Motif-Video draws 1 + {temporal}k frames, got {num_frames}; "
                             f"try {max(1, (num_frames - 1) // temporal * temporal + 1)}")
        if num_inference_steps < 1:
            raise ValueError(f"steps must be at least 1, got {num_inference_steps}")
        if guidance_scale is not None:
            self.guider = {**self.guider, "guidance_scale": float(guidance_scale)}
        batch, model = len(prompts), self.transformer
        spatial, channels = int(self.vae.spatial_factor), int(self.vae.config["z_dim"])
        shape = (batch, channels, (num_frames - 1) // temporal + 1, height // spatial,
                 width // spatial)
        generator = make_generator(rng, seed)
        if latents is None:
            latents = generator.standard_normal(shape).astype(np.float32)
        latents = np.asarray(latents, np.float32)
        if latents.shape != shape:
            raise ValueError(f"latents must have shape {shape}, got {latents.shape}")
        condition, embeds = self.first_frame(image, shape, generator)
        picture = 0 if embeds is None else embeds.shape[1]  # its tokens, before the text
        positive = self.contexts(prompts, max_sequence_length, embeds)
        negative = self.contexts([negative_prompt or ""] * batch, max_sequence_length,
                                 embeds) if self.guided() else []
        patch = int(model.config["patch_size"])
        tokens = shape[2] // int(model.config["patch_size_t"]) * (shape[3] // patch) * (
            shape[4] // patch)
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / num_inference_steps,
                                                   num_inference_steps),
                                mu=calculate_shift(tokens, self.scheduler_config))
        self._next_phase()
        with self.on_gpu(model):
            latents = self._steps(latents, condition, positive, negative, picture,
                                  scheduler, num_inference_steps, callback)
        if output_type == "latent":
            return latents
        return self._frames(latents)

    def _steps(self, latents: np.ndarray, condition: np.ndarray, positive: list[Tensor],
               negative: list[Tensor], picture: int, scheduler: Any, steps: int,
               callback: StepCallback | None) -> np.ndarray:
        """The scheduler's steps from `latents` (B, C, F, h, w): each video's velocity on
        its prompt's context, guided against the negative one where the guider runs."""
        model, scale = self.transformer, np.float32(self.guider["guidance_scale"])
        for i, t in enumerate(scheduler.timesteps):
            velocity = np.empty_like(latents)
            for row in range(len(latents)):
                x = asarray(np.concatenate([latents[row:row + 1], condition], axis=1),
                            dtype=model.dtype, device=model.device)
                cond = self._flow(x, t, positive[row], picture)
                if self.guided(i, steps):
                    uncond = self._flow(x, t, negative[row], picture)
                    cond = uncond + scale * (cond - uncond)
                velocity[row] = cond[0]
            latents = np.asarray(scheduler.step(velocity, t, latents), np.float32)
            if callback is not None and callback(i + 1, steps, latents) is False:
                break
        return latents


def _eight_bits(image: Any, width: int, height: int) -> np.ndarray:
    """The picture as the SigLIP processor's Pillow backend gets it from diffusers: resized
    (Lanczos) to the video's size, scaled to [-1, 1] and back, then truncated to 8 bits, the
    float32 steps in diffusers' and transformers' order (`VaeImageProcessor.preprocess`,
    `(x + 1) / 2`, `to_pil_image`)."""
    from PIL import Image

    picture = rgb_picture(image)
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.Resampling.LANCZOS)
    unit = np.asarray(picture, np.float32) / np.float32(255.0)
    back = np.clip((np.float32(2.0) * unit - np.float32(1.0) + np.float32(1.0)) / np.float32(2.0),
                   0.0, 1.0)
    return (back * np.float32(255)).astype(np.uint8)  # type: ignore[no-any-return]
