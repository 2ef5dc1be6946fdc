"""Kandinsky 5 Video Lite text-to-video, as diffusers' Kandinsky5T2VPipeline draws it: the
prompt in the pipeline's video template read by Qwen2.5-VL's language model (its last hidden
states, the template's first 128 tokens dropped) and by CLIP (its pooled output); noise of
(B, 1 + (frames - 1) / 4, H / 8, W / 8, 16) channels-last latents, to which a visual_cond
transformer's empty condition (zeros and a zero mask: 33 channels) is joined at each call;
FlowMatchEulerDiscreteScheduler stepping the transformer's velocity over the folder's schedule
(its constant shift), the rotary positions divided by (1, 2, 2) where both sides are 480 to
854 pixels and by (1, 3.16, 3.16) otherwise; classifier-free guidance `neg + g (pos - neg)`
for g > 1 against the negative prompt (diffusers' "Static, 2D cartoon, ..." when none is
given); HunyuanVideo's VAE decoding the latents divided by its scaling factor. With the torch
RNG a seed gives diffusers' video (`generator=torch.Generator("cpu").manual_seed(seed)`).

The memory modes (--medvram, --lowvram, --max-vram) are Kandinsky 5's pictures' (flow_memory:
the text encoders one unit, the transformer whole or its blocks streamed, the VAE), each phase
(the steps, the decode) starting with the last one's units sent to host memory; no network
runs from a capture, so the frames are the plain mode's, bitwise. LoRAs patch the transformer
as the picture family's (`lora_targets`).

Sparse NABLA attention (the 10-second models' `attention_type` "nabla") is refused in one line
before the weights load (models.refuse_video): run densely, their videos would not be the
ones diffusers' sparse attention makes, and no reference can tell how far apart they are.

    pipe = Kandinsky5VideoPipeline.from_pretrained("Kandinsky-5.0-T2V-Lite-sft-5s-Diffusers")
    frames = pipe("a cat walks on the grass", height=512, width=768, num_frames=121, seed=7)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ...loaders.kandinsky5 import kandinsky5_image_to_video, load_kandinsky5_folder
from ...models.clip import CLIPTextModel
from ...models.hunyuan_video_vae import AutoencoderKLHunyuanVideo
from ...models.kandinsky5 import Kandinsky5Transformer3DModel
from ...models.kandinsky5_prompt import encode
from ...models.llm import LLMTextModel
from ...models.step_cache import BranchCache, StepCache
from ...noise.rng import make_generator
from ...sampling.scheduler_loop import scheduler_loop
from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ...text.llm_tokenizer import LLMTokenizer
from ...text.tokenizer import CLIPTokenizer
from ..flow.flow_memory import MemoryLayout, load_network
from ..flow.kandinsky5 import kandinsky5_layout
from .flow_video import FlowVideoPipeline, prompt_list
from .kandinsky5_i2v import first_frames_normalized, picture_latents, refuse_short

__all__ = ["DEFAULT_NEGATIVE", "Kandinsky5VideoPipeline"]

# Kandinsky5T2VPipeline's negative prompt where none is given
DEFAULT_NEGATIVE = ("Static, 2D cartoon, cartoon, 2d animation, paintings, images, worst "
                    "quality, low quality, ugly, deformed, walking backwards")
StepCallback = Callable[[int, int, np.ndarray], bool | None]


def rotary_scale(height: int, width: int) -> tuple[float, float, float]:
    """The transformer's rotary divisors for a height x width video. diffusers:
    `Kandinsky5T2VPipeline._get_scale_factor`."""
    if 480 <= height <= 854 and 480 <= width <= 854:
        return (1.0, 2.0, 2.0)
    return (1.0, 3.16, 3.16)


class Kandinsky5VideoPipeline(FlowVideoPipeline):
    """A loaded Kandinsky 5 Video Lite diffusers folder (module docstring). Components as
    diffusers names them; `offload`: one network's weights on the GPU at a time; the memory
    modes: `set_memory_mode`."""

    family = "Kandinsky 5 Video"
    vae: AutoencoderKLHunyuanVideo

    def __init__(self, *, transformer: Kandinsky5Transformer3DModel,
                 vae: AutoencoderKLHunyuanVideo, text_encoder: LLMTextModel,
                 tokenizer: LLMTokenizer, text_encoder_2: CLIPTextModel,
                 tokenizer_2: CLIPTokenizer, scheduler_config: dict[str, Any],
                 offload: bool = False, image_to_video: bool = False) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.scheduler_config = dict(scheduler_config)
        self.offload, self.image_to_video = offload, image_to_video
        self._memory = None  # set_memory_mode's

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> Kandinsky5VideoPipeline:
        """Load a Kandinsky5T2VPipeline diffusers folder (`load_kandinsky5_folder(video=True)`)
        onto `device` in `dtype`; `offload`: each network goes to host memory as soon as it
        is loaded, and comes to the GPU only while it runs."""
        weights = load_kandinsky5_folder(path, variant=variant, video=True)
        transformer = weights.transformer
        assert transformer is not None and weights.text_encoder is not None
        place = {"dtype": dtype, "device": device or default_device()}

        def load(build: Callable[[], Any], part: Any) -> Any:
            return load_network(build, part, device=place["device"], offload_to_host=offload)

        qwen, clip = weights.text_encoder, weights.text_encoder_2
        return cls(
            text_encoder=load(lambda: LLMTextModel(qwen.config, **place), qwen),
            text_encoder_2=load(lambda: CLIPTextModel(clip.config, **place), clip),
            transformer=load(lambda: Kandinsky5Transformer3DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKLHunyuanVideo(weights.vae.config, **place),
                     weights.vae),
            tokenizer=LLMTokenizer(weights.tokenizer_dir),
            tokenizer_2=CLIPTokenizer.from_pretrained(weights.tokenizer_2_dir),
            scheduler_config=weights.scheduler_config, offload=offload,
            image_to_video=kandinsky5_image_to_video(path))

    def networks(self) -> tuple[Any, ...]:
        return (self.text_encoder, self.text_encoder_2, self.transformer, self.vae)

    def memory_layout(self) -> MemoryLayout:
        return kandinsky5_layout(self)

    @property
    def size_multiple(self) -> int:
        """What height and width must be multiples of: the VAE's 8 times the patch's 2."""
        return int(self.vae.spatial_compression_ratio) * int(self.transformer.patch[1])

    def encode_prompt(self, prompt: str, max_sequence_length: int = 512
                      ) -> tuple[Tensor, Tensor]:
        """(the transformer's text tokens (1, L, dim), CLIP's pooled vector (1, D2)) of
        `prompt` in the video template. diffusers: `Kandinsky5T2VPipeline.encode_prompt`."""
        with self.on_gpu(self.text_encoder, self.text_encoder_2):
            states, pooled = encode(self.text_encoder, self.tokenizer, self.text_encoder_2,
                                    self.tokenizer_2, prompt, video=True,
                                    max_sequence_length=max_sequence_length)
        model = self.transformer
        with self.on_gpu(model):
            return model.text(states), asarray(pooled, dtype=model.dtype, device=model.device)

    def check(self, *, num_frames: int, image: Any = None, **settings: Any) -> None:
        """ValueError in one line for a setting this pipeline cannot run (FlowVideoPipeline's
        checks; image to video from at least 17 frames)."""
        super().check(num_frames=num_frames, image=image, **settings)
        if image is not None:
            refuse_short(num_frames, self.temporal_factor)

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | None = None,
                 height: int = 512, width: int = 768, num_frames: int = 121,
                 num_inference_steps: int = 50, guidance_scale: float = 5.0, seed: int = 0,
                 rng: str = "torch", sampler: str = "diffusers",
                 max_sequence_length: int = 512, callback: StepCallback | None = None,
                 cache: StepCache | None = None, image: Any = None) -> np.ndarray:
        """Videos for `prompt` (one or a list, each encoded on its own): (B, num_frames,
        height, width, 3) float in [0, 1]. `negative_prompt`: None or "" is diffusers'
        DEFAULT_NEGATIVE. `callback(done, total, latents)` after every step (False stops);
        `cache`: First Block Cache; `image` (PIL or HxWx3 uint8): the first frame, for the
        image-to-video model. diffusers: `Kandinsky5T2VPipeline(prompt, negative_prompt=,
        height=, width=, num_frames=, num_inference_steps=, guidance_scale=,
        generator=torch.Generator().manual_seed(seed), output_type="np").frames`
        (Kandinsky5I2VPipeline's with `image=`)."""
        prompts = prompt_list(prompt)
        self.check(height=height, width=width, num_frames=num_frames,
                   steps=num_inference_steps, rng=rng, sampler=sampler, cache=cache,
                   image=image)
        guided = guidance_scale > 1
        negative = negative_prompt or DEFAULT_NEGATIVE
        texts = [self.encode_prompt(p, max_sequence_length) for p in prompts]
        negatives = [self.encode_prompt(negative, max_sequence_length)] if guided else []
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(num_inference_steps)
        channels = int(self.transformer.config["in_visual_dim"])
        spatial = int(self.vae.spatial_compression_ratio)
        shape = (len(prompts), (num_frames - 1) // self.temporal_factor + 1,
                 height // spatial, width // spatial, channels)
        generator = make_generator(rng, seed)
        latents = generator.standard_normal(shape).astype(np.float32)
        if image is not None:  # the picture's latents the first frame, drawn after the noise
            with self.on_gpu(self.vae):
                latents[:, :1] = picture_latents(self.vae, image, width, height, generator)
        # a visual_cond model reads a condition beside the latents: zeros and a mask, 1 on the
        # first frame where it is the picture's
        empty = np.zeros((1, *shape[1:4], channels + 1), np.float32) \
            if self.transformer.config["visual_cond"] else None
        if empty is not None and image is not None:
            empty[:, :1, ..., -1] = 1
        scale = rotary_scale(height, width)
        g = np.float32(guidance_scale)
        branches: dict[tuple[int, int], BranchCache] = {}

        def branch(video: int, side: int) -> BranchCache | None:
            if cache is None:
                return None
            if (video, side) not in branches:  # one per video and guidance side
                branches[video, side] = cache.branch()
            return branches[video, side]

        def predict(x: np.ndarray, t: Any, i: int) -> tuple[np.ndarray, None]:
            model, timestep = self.transformer, np.array([float(t)], np.float32)
            out = []
            for b in range(len(x)):
                video = x[b:b + 1] if empty is None else np.concatenate(
                    [x[b:b + 1], empty], axis=-1)
                sample = asarray(video, dtype=model.dtype, device=model.device)
                flow = model(sample, timestep, *texts[b], scale_factor=scale,
                             cache=branch(b, 0)).numpy().astype(np.float32)
                if guided:
                    base = model(sample, timestep, *negatives[0], scale_factor=scale,
                                 cache=branch(b, 1)).numpy().astype(np.float32)
                    flow = base + g * (flow - base)
                out.append(flow[0])
            flows = np.stack(out)
            if image is not None:  # the first frame held: an Euler step of 0 leaves it as is
                flows[:, :1] = 0
            return flows, None

        self._next_phase()
        with self.on_gpu(self.transformer):
            latents = scheduler_loop(latents, scheduler.timesteps, scheduler, predict,
                                     dtype=np.float32, callback=callback)
        if image is not None:
            latents = first_frames_normalized(latents)
        return self._frames(latents)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Videos (B, T, H, W, 3) in [0, 1] from the transformer's channels-last latents
        (B, F, h, w, C), decoded as Kandinsky5T2VPipeline decodes (FlowVideoPipeline's)."""
        return super().decode(np.ascontiguousarray(latents.transpose(0, 4, 1, 2, 3)))
