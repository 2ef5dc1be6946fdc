"""HunyuanVideo 1.5 text-to-video and image-to-video, as diffusers' HunyuanVideo15Pipeline and
HunyuanVideo15ImageToVideoPipeline draw them: the prompt's Qwen2.5-VL chat states and its
quoted texts' ByT5 glyph states (models.hunyuan_video15_prompt); noise of (B, 32, 1 + (frames
- 1) / 4, H / 16, W / 16) latents, beside which the transformer reads the condition channels
(hunyuan_video15_inputs: zeros for text to video; the first frame's VAE latents and a mask
for image to video, with SigLIP's tokens of that frame); FlowMatchEulerDiscreteScheduler over
sigmas 1 .. 1/n with the folder's constant shift; the folder's ClassifierFreeGuidance
(`neg + g (pos - neg)` on the steps in its [start, stop), the negative prompt "" by default);
the VAE decoding the latents divided by its scaling factor. Text to video is 16:9 at the
transformer's `target_size` unless given a size; image to video takes the size of the
picture's aspect bucket, the picture scaled to cover it. A meanflow image-to-video
transformer also reads the next step's timestep. With the torch RNG a seed gives diffusers'
video (`generator=torch.Generator("cpu").manual_seed(seed)`).

The memory modes (--medvram, --lowvram, --max-vram) are the flow families' (flow_memory: the
text encoders and SigLIP one unit, the transformer whole or its blocks streamed, the VAE),
each phase starting with the last one's units sent to host memory; no network runs from a
capture, so the frames are the plain mode's, bitwise.

    pipe = HunyuanVideo15Pipeline.from_pretrained("HunyuanVideo-1.5-Diffusers-480p_t2v")
    frames = pipe('a neon sign saying "OPEN" flickers', num_frames=61, seed=7)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import asarray

from ...loaders.hunyuan_video15.folder import load_hunyuan_video15_folder
from ...models.hunyuan_video15 import HunyuanVideo15Transformer3DModel
from ...models.hunyuan_video15_prompt import qwen_video_states, video_glyph_states
from ...models.hunyuan_video15_vae import AutoencoderKLHunyuanVideo15
from ...models.hunyuanimage_prompt import ByT5Tokenizer
from ...models.llm import LLMTextModel
from ...models.redux import SiglipVisionModel
from ...models.step_cache import StepCache
from ...models.t5 import T5EncoderModel
from ...noise.rng import make_generator
from ...sampling.scheduler_loop import scheduler_loop
from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ...text.llm_tokenizer import LLMTokenizer
from ..finite import check_encoded
from ..flow.flow_memory import MemoryLayout, load_network
from ..flow.hunyuanimage_guidance import MixGuidance
from ..flow.redux import siglip_pixels
from .flow_video import FlowVideoPipeline, prompt_list
from .hunyuan_video15_inputs import bucket_size, condition_channels, first_frame

__all__ = ["HunyuanVideo15Pipeline", "hunyuan_video15_layout"]

StepCallback = Callable[[int, int, np.ndarray], bool | None]
_WIDE = (9, 16)  # text to video's default aspect (height, width), diffusers' (16, 9) w:h


def hunyuan_video15_layout(pipe: Any) -> MemoryLayout:
    """What the memory modes (flow_memory) move of a HunyuanVideo 1.5 pipeline: Qwen2.5-VL,
    ByT5 and SigLIP (image to video) as one unit, the transformer (brought in by
    `prepare_text` too, a run's text part) and its blocks, the VAE."""
    readers = [(pipe.text_encoder, "hidden_states"), (pipe.text_encoder_2, "forward")]
    if pipe.image_encoder is not None:
        readers.append((pipe.image_encoder, "forward"))
    return MemoryLayout(transformer=pipe.transformer,
                        blocks=(pipe.transformer.transformer_blocks,),
                        text_encoders=tuple(m for m, _ in readers), text_calls=tuple(readers),
                        vae=pipe.vae, transformer_calls=("prepare_text",))


class HunyuanVideo15Pipeline(FlowVideoPipeline):
    """A loaded HunyuanVideo 1.5 diffusers folder (module docstring). Components as diffusers
    names them; `guider` the folder's guider_config.json's; `processor_config` SigLIP's
    preprocessor_config.json (image to video); `target_size` the side the size buckets are
    made for (the transformer config's: 640 for 480p, 960 for 720p); `offload`: one
    network's weights on the GPU at a time; the memory modes: `set_memory_mode`."""

    family = "HunyuanVideo 1.5"
    vae: AutoencoderKLHunyuanVideo15

    def __init__(self, *, transformer: HunyuanVideo15Transformer3DModel,
                 vae: AutoencoderKLHunyuanVideo15, text_encoder: LLMTextModel,
                 tokenizer: LLMTokenizer, text_encoder_2: T5EncoderModel,
                 tokenizer_2: ByT5Tokenizer, scheduler_config: dict[str, Any],
                 guider: MixGuidance, image_encoder: SiglipVisionModel | None = None,
                 processor_config: dict[str, Any] | None = None, target_size: int = 640,
                 offload: bool = False) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.image_encoder, self.processor_config = image_encoder, dict(processor_config or {})
        self.image_to_video = image_encoder is not None
        self.scheduler_config, self.guider = dict(scheduler_config), guider
        self.offload, self.target_size = offload, target_size
        self._memory = None  # set_memory_mode's

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> HunyuanVideo15Pipeline:
        """Load a HunyuanVideo 1.5 diffusers folder (`load_hunyuan_video15_folder`: text to
        video or image to video) onto `device` in `dtype`; `offload`: each network goes to
        host memory as soon as it is loaded (the readers before the transformer loads)."""
        weights = load_hunyuan_video15_folder(path, variant=variant)
        parts = (weights.transformer, weights.text_encoder, weights.text_encoder_2)
        transformer, qwen, byt5 = parts
        assert transformer is not None and qwen is not None and byt5 is not None
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        siglip = weights.image_encoder
        guider = MixGuidance.from_config(weights.guider or {},
                                         f"{Path(path) / 'guider' / 'guider_config.json'}")
        return cls(
            text_encoder=load(lambda: LLMTextModel(qwen.config, **place), qwen),
            text_encoder_2=load(lambda: T5EncoderModel(byt5.config, **place), byt5),
            image_encoder=None if siglip is None else load(
                lambda: SiglipVisionModel(siglip.config, **place), siglip),
            transformer=load(lambda: HunyuanVideo15Transformer3DModel(transformer.config,
                                                                      **place), transformer),
            vae=load(lambda: AutoencoderKLHunyuanVideo15(weights.vae.config, **place),
                     weights.vae),
            tokenizer=LLMTokenizer(weights.tokenizer_dir),
            tokenizer_2=ByT5Tokenizer.from_dir(weights.tokenizer_2_dir or Path(path)),
            scheduler_config=weights.scheduler_config, guider=guider,
            processor_config=weights.processor_config, offload=offload,
            target_size=int(transformer.config.get("target_size") or 640))

    def networks(self) -> tuple[Any, ...]:
        return tuple(network for network in (self.text_encoder, self.text_encoder_2,
                                             self.image_encoder, self.transformer, self.vae)
                     if network is not None)

    def memory_layout(self) -> MemoryLayout:
        return hunyuan_video15_layout(self)

    @property
    def size_multiple(self) -> int:
        """What height and width must be multiples of: the VAE's factor times the patch's."""
        return int(self.vae.spatial_compression_ratio) * int(
            self.transformer.config.get("patch_size") or 1)

    def default_size(self, image: Any = None) -> tuple[int, int]:
        """(height, width): the bucket nearest the picture's aspect (PIL or HxWx3), 16:9
        without one. diffusers: `calculate_default_height_width`."""
        high, wide = _WIDE if image is None else np.asarray(image).shape[:2]
        return bucket_size(high, wide, target_size=self.target_size,
                           patch_size=int(self.vae.spatial_compression_ratio))

    def encode_prompt(self, prompts: Sequence[str]) -> tuple[np.ndarray, ...]:
        """(states, mask, glyph states, glyph mask) of `prompts`, diffusers' shapes (1000 and
        256 tokens). diffusers: `HunyuanVideo15Pipeline.encode_prompt`."""
        with self.on_gpu(self.text_encoder, self.text_encoder_2):
            states, mask = qwen_video_states(self.text_encoder, self.tokenizer, prompts)
            glyphs = [video_glyph_states(self.text_encoder_2, self.tokenizer_2, p)
                      for p in prompts]
        return (states, mask, np.concatenate([g[0] for g in glyphs]),
                np.concatenate([g[1] for g in glyphs]))

    def encode_image(self, frame: Any) -> tuple[np.ndarray, np.ndarray]:
        """SigLIP's last hidden state (1, 729, 1152) of the first frame and its VAE latents
        (1, 32, 1, h, w) times the scaling factor (the posterior's mean). diffusers:
        `_get_image_embeds`, `_get_image_latents`."""
        assert self.image_encoder is not None
        with self.on_gpu(self.image_encoder):
            embeds = self.image_encoder(siglip_pixels(frame, self.processor_config))
            embeds_host = embeds.numpy().astype(np.float32)
        pixels = np.asarray(frame, np.float32).transpose(2, 0, 1)[None, :, None] / 127.5 - 1

        def encode(vae: Any) -> np.ndarray:  # this VAE, or its float32 copy
            weight = next(iter(vae.parameters()))
            z = vae.encode(asarray(pixels, dtype=weight.dtype, device=weight.device))
            mean = z.numpy().astype(np.float32)
            check_encoded(mean, vae)
            return mean * np.float32(vae.scaling_factor)
        return embeds_host, self._with_vae(encode)

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | None = None,
                 image: Any = None, height: int | None = None, width: int | None = None,
                 num_frames: int = 121, num_inference_steps: int = 50,
                 guidance_scale: float | None = None, seed: int = 0, rng: str = "torch",
                 sampler: str = "diffusers", callback: StepCallback | None = None,
                 cache: StepCache | None = None) -> np.ndarray:
        """Videos for `prompt` (one or a list): (B, num_frames, height, width, 3) float in
        [0, 1]. `image` (PIL or HxWx3 uint8): the first frame, for the image-to-video model,
        whose size is then its bucket's (height and width must be left out); `negative_prompt`
        None is ""; `guidance_scale` None is the folder guider's. `callback(done, total,
        latents)` after every step (False stops); `cache`: First Block Cache. diffusers:
        `HunyuanVideo15Pipeline(prompt, negative_prompt=, height=, width=, num_frames=,
        num_inference_steps=, generator=torch.Generator().manual_seed(seed)).frames`
        (HunyuanVideo15ImageToVideoPipeline's with `image=`, no size)."""
        prompts = prompt_list(prompt)
        if image is not None and (height is not None or width is not None):
            raise ValueError("HunyuanVideo 1.5 image-to-video makes the size of the picture's "
                             "aspect bucket: leave the width and height out")
        if (height is None) != (width is None):
            raise ValueError("give both width and height, or neither (16:9)")
        if height is None or width is None:
            height, width = self.default_size(image)
        self.check(height=height, width=width, num_frames=num_frames,
                   steps=num_inference_steps, rng=rng, sampler=sampler, cache=cache,
                   image=image)
        guider = self.guider if guidance_scale is None else self.guider.with_scale(
            guidance_scale)
        frame = None if image is None else first_frame(image, height, width)
        embeds, frame_latents = (None, None) if frame is None else self.encode_image(frame)
        texts = self.encode_prompt(prompts)
        negatives = self.encode_prompt([negative_prompt or ""] * len(prompts)) \
            if guider.takes_negative else None
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1])
        timesteps = np.asarray(scheduler.timesteps, np.float32)
        channels = int(self.vae.config["latent_channels"])
        spatial = int(self.vae.spatial_compression_ratio)
        shape = (len(prompts), channels, (num_frames - 1) // self.temporal_factor + 1,
                 height // spatial, width // spatial)
        latents = make_generator(rng, seed).standard_normal(shape).astype(np.float32)
        condition = condition_channels(frame_latents, shape)
        image_embeds = None if embeds is None else np.repeat(embeds, len(prompts), axis=0)
        meanflow = image is not None and bool(self.transformer.config.get("use_meanflow"))
        branches = [None if cache is None or (side and negatives is None) else cache.branch()
                    for side in range(2)]
        prepared: list[Any] = []  # each side's text as the transformer reads it, once a run

        def predict(x: np.ndarray, t: Any, i: int) -> tuple[np.ndarray, None]:
            model, batch = self.transformer, len(x)
            sample = asarray(np.concatenate([x, condition], axis=1), dtype=model.dtype,
                             device=model.device)
            timestep = np.full(batch, np.float32(t), np.float32)
            after = timesteps[i + 1] if i + 1 < len(timesteps) else np.float32(0)
            r = np.full(batch, after, np.float32) if meanflow else None

            def run(side: int) -> np.ndarray:
                out = model(sample, timestep, prepared[side], None, r, cache=branches[side])
                return out.numpy().astype(np.float32)
            cond = run(0)
            guided = negatives is not None and guider.cfg_at(i, num_inference_steps)
            uncond = run(1) if guided else None
            return guider.combine(cond, uncond, step=i, steps=num_inference_steps,
                                  state=None), None

        self._next_phase()
        with self.on_gpu(self.transformer):
            for states, mask, glyph, glyph_mask in (texts, *([negatives] if negatives else [])):
                prepared.append(self.transformer.prepare_text(states, mask, glyph, glyph_mask,
                                                              image_embeds))
            latents = scheduler_loop(latents, scheduler.timesteps, scheduler, predict,
                                     dtype=np.float32, callback=callback)
        return self._frames(latents)
