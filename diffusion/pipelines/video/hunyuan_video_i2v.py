"""HunyuanVideo-I2V (HunyuanVideo 1.0 image to video), as diffusers'
HunyuanVideoImageToVideoPipeline draws it: the picture resized to the video's size (Lanczos)
and encoded by the VAE (the posterior's mean times the scaling factor); noise of the video's
latents moved 0.1% toward the picture's latents on every frame (`latents * 0.999 + picture *
0.001`); the prompt read by LLaVA-Llama-3 with the picture's tokens
(models.hunyuan_video_i2v_prompt: every 4th for token_replace checkpoints, every 2nd for
latent_concat ones) and by CLIP (the pooled output). Then the HunyuanVideo loop (embedded
guidance; true CFG with a negative prompt, which reads a black picture with every 2nd token,
as diffusers):

- token_replace (HunyuanVideo-I2V): the first latent frame is the picture's latents at every
  step (the transformer modulating its tokens at timestep 0), the others are denoised;
- latent_concat (HunyuanVideo-I2V-33ch): the picture's latents on frame 0 and a mask (1
  there) are joined as more channels; the first 4 decoded frames are dropped (diffusers'
  `video[:, :, 4:]`), so the video has num_frames - 4 frames.

    pipe = HunyuanVideoImageToVideoPipeline.from_pretrained("HunyuanVideo-I2V")
    frames = pipe("a man plays the guitar", image=picture, height=720, width=1280)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import asarray

from ...loaders.formats.diffusers_folder import pipeline_class
from ...loaders.hunyuan_video.folder import I2V_CLASS, load_hunyuan_video_folder
from ...models.hunyuan_video_i2v_prompt import LlavaVision, llava_states
from ...models.hunyuan_video_prompt import MAX_SEQUENCE_LENGTH, clip_pooled
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.scheduler_loop import scheduler_loop
from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ..finite import check_encoded
from ..flow.flow_memory import MemoryLayout
from .flow_video import prompt_list
from .hunyuan_video import HunyuanVideoPipeline, StepCallback, Text
from .wan_image import resized_pixels

__all__ = ["HunyuanVideoImageToVideoPipeline", "hunyuan_video_class"]

_NOISE = np.float32(0.999)  # diffusers' prepare_latents: t = 0.999
_INTERLEAVE = {"token_replace": 4, "latent_concat": 2}
_DROPPED = 4  # latent_concat: the decoded frames before the first frame's


class HunyuanVideoImageToVideoPipeline(HunyuanVideoPipeline):
    """A loaded HunyuanVideoImageToVideoPipeline folder (module docstring): HunyuanVideo's
    parts, the text encoder LLaVA's language model, and `vision` (LLaVA's CLIP tower and
    projector) with `image_token_index` (LLaVA's <image> id)."""

    family = "HunyuanVideo-I2V"

    def __init__(self, *, vision: LlavaVision, image_token_index: int, **parts: Any) -> None:
        super().__init__(**parts)
        self.vision, self.image_token_index = vision, int(image_token_index)
        self.image_to_video = True
        condition = self.transformer.config["image_condition_type"]
        if condition not in _INTERLEAVE:
            raise ValueError(f"an image-to-video HunyuanVideo folder needs an image-to-video "
                             f"transformer (image_condition_type 'token_replace' or "
                             f"'latent_concat'), got {condition!r}")
        self.condition = condition

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> HunyuanVideoImageToVideoPipeline:
        """Load a HunyuanVideoImageToVideoPipeline diffusers folder as
        HunyuanVideoPipeline.from_pretrained does, LLaVA's picture side besides; ValueError
        for a text-to-video folder."""
        weights = load_hunyuan_video_folder(path, variant=variant)
        seen = weights.vision
        if seen is None:
            raise ValueError(f"{path} is HunyuanVideo text-to-video: load it with "
                             "HunyuanVideoPipeline")
        place, load = cls._placing(dtype, device, offload)
        vision = load(lambda: LlavaVision(seen.config, **place), seen)
        return cls(vision=vision, image_token_index=seen.config["image_token_index"],
                   offload=offload, **cls._loaded(weights, load, place))

    def networks(self) -> tuple[Any, ...]:
        return (self.text_encoder, self.vision, self.text_encoder_2, self.transformer,
                self.vae)

    def memory_layout(self) -> MemoryLayout:
        transformer = self.transformer
        return MemoryLayout(
            transformer=transformer, blocks=(transformer.transformer_blocks,
                                             transformer.single_transformer_blocks),
            text_encoders=(self.text_encoder, self.vision, self.text_encoder_2),
            text_calls=((self.vision, "forward"), (self.text_encoder, "hidden_states"),
                        (self.text_encoder_2, "forward_pooled")),
            vae=self.vae, transformer_calls=("prepare_text",))

    def encode_prompt_with(self, picture: Any, prompts: Sequence[str], interleave: int,
                           max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> Text:
        """(LLaVA's states with the picture's tokens (B, L, 4096), their mask, CLIP's pooled
        output (B, 768)). diffusers: `encode_prompt(image=, prompt=, image_embed_interleave=)`."""
        with self.on_gpu(self.text_encoder, self.vision, self.text_encoder_2):
            states, mask = llava_states(self.text_encoder, self.vision, self.tokenizer, picture,
                                        prompts, interleave,
                                        image_token_index=self.image_token_index,
                                        max_sequence_length=max_sequence_length)
            pooled = clip_pooled(self.text_encoder_2, self.tokenizer_2, prompts)
        return states, mask, pooled

    def picture_latents(self, image: Any, height: int, width: int) -> np.ndarray:
        """The picture's latents (1, C, 1, h, w) times the scaling factor (the posterior's
        mean of the picture resized to width x height). diffusers: `prepare_latents`'
        `retrieve_latents(vae.encode(image), sample_mode="argmax") * scaling_factor`."""
        pixels = resized_pixels(image, height, width).transpose(2, 0, 1)[None, :, None]

        def encode(vae: Any) -> np.ndarray:
            weight = next(iter(vae.parameters()))
            mean = vae.encode(asarray(np.ascontiguousarray(pixels), dtype=weight.dtype,
                                      device=weight.device)).numpy().astype(np.float32)
            check_encoded(mean, vae)
            return mean * np.float32(vae.scaling_factor)  # type: ignore[no-any-return]
        return self._with_vae(encode)

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | None = None,
                 height: int = 720, width: int = 1280, num_frames: int = 129,
                 num_inference_steps: int = 50, guidance_scale: float = 1.0,
                 true_cfg_scale: float = 1.0, seed: int = 0, rng: str = "torch",
                 sampler: str = "diffusers", max_sequence_length: int = MAX_SEQUENCE_LENGTH,
                 callback: StepCallback | None = None, cache: StepCache | None = None,
                 image: Any = None) -> np.ndarray:
        """Videos for `prompt` (one or a list) from the picture `image` (PIL or HxWx3
        uint8): (B, frames, height, width, 3) float in [0, 1], num_frames of them
        (latent_concat: num_frames - 4). Settings as HunyuanVideoPipeline's; guidance_scale
        defaults to diffusers' 1.0 here. diffusers: `HunyuanVideoImageToVideoPipeline(image,
        prompt, negative_prompt=, height=, width=, num_frames=, num_inference_steps=,
        guidance_scale=, true_cfg_scale=, generator=torch.Generator().manual_seed(seed),
        output_type="np").frames`."""
        prompts = prompt_list(prompt)
        self.check(height=height, width=width, num_frames=num_frames,
                   steps=num_inference_steps, rng=rng, sampler=sampler, cache=cache,
                   image=image)
        if not np.isfinite(true_cfg_scale) or not np.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale and true_cfg_scale must be numbers, got "
                             f"{guidance_scale} and {true_cfg_scale}")
        model, replace = self.transformer, self.condition == "token_replace"
        picture = self.picture_latents(image, height, width)
        channels = int(model.config["in_channels"])
        channels = channels if replace else (channels - 1) // 2
        spatial = int(self.vae.spatial_compression_ratio)
        shape = (len(prompts), channels, (num_frames - 1) // self.temporal_factor + 1,
                 height // spatial, width // spatial)
        noise = make_generator(rng, seed).standard_normal(shape).astype(np.float32)
        latents = noise * _NOISE + picture * (np.float32(1) - _NOISE)
        first = np.broadcast_to(picture, (len(prompts), *picture.shape[1:]))
        condition = np.zeros((len(prompts), channels + 1, *shape[2:]), np.float32)
        condition[:, :channels, :1], condition[:, channels, 0] = first, 1
        texts = self.encode_prompt_with(image, prompts, _INTERLEAVE[self.condition],
                                        max_sequence_length)
        negatives = None
        if true_cfg_scale > 1 and negative_prompt is not None:
            from PIL import Image

            black = Image.new("RGB", (width, height), 0)
            negatives = self.encode_prompt_with(black, [negative_prompt] * len(prompts), 2,
                                                max_sequence_length)
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1])
        guidance = np.full(len(prompts), guidance_scale, model.dtype) * model.dtype.type(1000) \
            if model.config["guidance_embeds"] else None
        branches = [None if cache is None or (side and negatives is None) else cache.branch()
                    for side in range(2)]
        scale = np.float32(true_cfg_scale)
        prepared: list[tuple[Any, np.ndarray]] = []

        def predict(x: np.ndarray, t: Any, i: int) -> tuple[np.ndarray, None]:
            joined = np.concatenate([first, x[:, :, 1:]], axis=2) if replace else \
                np.concatenate([x, condition], axis=1)
            sample = asarray(joined, dtype=model.dtype, device=model.device)
            timestep = np.full(len(x), np.float32(t), np.float32)

            def run(side: int) -> np.ndarray:
                text, pooled = prepared[side]
                out = model(sample, timestep, text, None, pooled, guidance,
                            cache=branches[side])
                return out.numpy().astype(np.float32)  # type: ignore[no-any-return]
            flow = run(0)
            if negatives is not None:
                base = run(1)
                flow = base + scale * (flow - base)
            return flow, None

        def after_step(i: int, x: np.ndarray) -> np.ndarray:
            # token_replace: the first frame is the picture's, whatever the step made of it
            return np.concatenate([first, x[:, :, 1:]], axis=2) if replace else x

        self._next_phase()
        with self.on_gpu(self.transformer):
            for states, mask, pooled in (texts, *([negatives] if negatives else [])):
                prepared.append((model.prepare_text(states, mask), pooled))
            latents = scheduler_loop(latents, scheduler.timesteps, scheduler, predict,
                                     after_step=after_step, dtype=np.float32,
                                     callback=callback)
        frames = self._frames(latents)
        return frames if replace else frames[:, _DROPPED:]


def hunyuan_video_class(path: str | Path) -> type[HunyuanVideoPipeline]:
    """The pipeline class that loads the HunyuanVideo folder `path`: this module's for a
    HunyuanVideoImageToVideoPipeline folder, FramePack's for a HunyuanVideoFramepackPipeline
    one, HunyuanVideoPipeline for the others."""
    from ...loaders.hunyuan_video.framepack import framepack_family

    if framepack_family(path):
        from .hunyuan_video_framepack import HunyuanVideoFramepackPipeline

        return HunyuanVideoFramepackPipeline
    image = pipeline_class(Path(path)) == I2V_CLASS
    return HunyuanVideoImageToVideoPipeline if image else HunyuanVideoPipeline
