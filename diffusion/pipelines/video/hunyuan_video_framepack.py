"""FramePack image to video (lllyasviel's next-frame-section packing on HunyuanVideo), as
diffusers' HunyuanVideoFramepackPipeline draws it: the prompt read as HunyuanVideo's (Llama
+ CLIP: video/hunyuan_video); the picture stretched to the video's size, SigLIP's states of
it (the transformer's `image_embeds`) and its VAE latents (the posterior sampled with the
run's generator, before any noise); then the video made section by section
(hunyuan_video_framepack_sections: backwards for FramePackI2V_HY's
"inverted_anti_drifting", forwards for F1's "vanilla"), each `latent_window_size` latent
frames from fresh noise over sigmas 1 .. 1/n (the scheduler's shift, or mu of the window's
tokens where it shifts dynamically), the guidance-distilled transformer reading the
embedded guidance (x1000) and the packed history, true CFG besides where `true_cfg_scale`
> 1 with a negative prompt; each section decoded as it is made, joined to the video with a
soft fade over the overlapping frames. The video has the sections' frames (not
num_frames', which only sets how many sections). With the torch RNG a seed gives
diffusers' video (`generator=torch.Generator("cpu").manual_seed(seed)`).

    pipe = HunyuanVideoFramepackPipeline.from_pretrained("FramePack")
    frames = pipe("a cat dances", image=picture, height=640, width=640, num_frames=129)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import asarray

from ...imaging import fit_picture, rgb_picture
from ...loaders.hunyuan_video.framepack import load_framepack_folder
from ...models.clip import CLIPTextModel
from ...models.hunyuan_video_framepack import HunyuanVideoFramepackTransformer3DModel
from ...models.hunyuan_video_prompt import MAX_SEQUENCE_LENGTH
from ...models.hunyuan_video_vae import AutoencoderKLHunyuanVideo
from ...models.llm import LLMTextModel
from ...models.redux import SiglipVisionModel
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.model_sampling import calculate_shift
from ...sampling.scheduler_loop import scheduler_loop
from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ...text.llm_tokenizer import LLMTokenizer
from ...text.tokenizer import CLIPTokenizer
from ..finite import check_decoded, check_encoded
from ..flow.flow_memory import MemoryLayout, load_network
from ..flow.redux import siglip_pixels
from .flow_video import prompt_list
from .hunyuan_video import HunyuanVideoPipeline
from .hunyuan_video_framepack_sections import (
    SAMPLING_TYPES,
    appended,
    empty_history,
    pack,
    section_count,
    soft_append,
)

__all__ = ["HunyuanVideoFramepackPipeline"]

StepCallback = Callable[[int, int, np.ndarray], bool | None]


def framepack_pixels(image: Any, height: int, width: int) -> tuple[np.ndarray, Any]:
    """The picture as the VAE reads it, (1, 3, 1, H, W) in [-1, 1] (stretched to width x
    height, Lanczos), and the uint8 picture SigLIP's processor resizes: diffusers hands it
    (x + 1) / 2 of those floats, which transformers turns back into uint8 by truncation
    (a value a rounding under an integer loses 1). diffusers: `video_processor.preprocess`,
    `encode_image`."""
    frame = np.asarray(fit_picture(rgb_picture(image), width, height, 0), np.float32)
    pixels = (frame / np.float32(255)) * np.float32(2) - np.float32(1)
    back = ((pixels + np.float32(1)) / np.float32(2)).astype(np.float64) * 255
    return (np.ascontiguousarray(pixels.transpose(2, 0, 1)[None, :, None]),
            back.astype(np.uint8))


class _Progress:
    """The run's step callback over its sections: `done` the steps of the sections before,
    `stopped` once the callback said False (no section follows)."""

    def __init__(self, callback: StepCallback | None, sections: int) -> None:
        self.callback, self.sections, self.done, self.stopped = callback, sections, 0, False

    def __call__(self, finished: int, steps: int, latents: np.ndarray) -> bool | None:
        if self.callback is None:
            return None
        if self.callback(self.done + finished, self.sections * steps, latents) is False:
            self.stopped = True
            return False
        return None


class HunyuanVideoFramepackPipeline(HunyuanVideoPipeline):
    """A loaded HunyuanVideoFramepackPipeline folder (module docstring): HunyuanVideo's
    components with FramePack's transformer, SigLIP's `image_encoder` and its processor's
    settings."""

    family = "FramePack"
    transformer: HunyuanVideoFramepackTransformer3DModel  # type: ignore[assignment]

    def __init__(self, *, image_encoder: SiglipVisionModel,
                 processor_config: dict[str, Any], **parts: Any) -> None:
        super().__init__(**parts)
        self.image_encoder, self.processor_config = image_encoder, dict(processor_config)
        self.image_to_video = True

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False, transformer: str | Path | None = None
                        ) -> HunyuanVideoFramepackPipeline:
        """Load a HunyuanVideoFramepackPipeline folder (`load_framepack_folder`) onto
        `device` in `dtype`, `transformer` (a FramePack transformer file, e.g.
        FramePackI2V_HY_bf16.safetensors, or folder) in place of its own; `offload` as
        HunyuanVideoPipeline's."""
        weights = load_framepack_folder(path, variant=variant, transformer=transformer)
        packed, llama, clip, siglip = (weights.transformer, weights.text_encoder,
                                       weights.text_encoder_2, weights.image_encoder)
        assert packed is not None and llama is not None and clip is not None
        assert siglip is not None and weights.tokenizer_2_dir is not None
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        return cls(
            text_encoder=load(lambda: LLMTextModel(llama.config, **place), llama),
            text_encoder_2=load(lambda: CLIPTextModel(clip.config, **place), clip),
            image_encoder=load(lambda: SiglipVisionModel(siglip.config, **place), siglip),
            transformer=load(lambda: HunyuanVideoFramepackTransformer3DModel(
                packed.config, **place), packed),
            vae=load(lambda: AutoencoderKLHunyuanVideo(weights.vae.config, **place),
                     weights.vae),
            tokenizer=LLMTokenizer(weights.tokenizer_dir),
            tokenizer_2=CLIPTokenizer.from_pretrained(weights.tokenizer_2_dir),
            scheduler_config=weights.scheduler_config,
            processor_config=weights.processor_config, offload=offload)

    def networks(self) -> tuple[Any, ...]:
        return (self.text_encoder, self.text_encoder_2, self.image_encoder, self.transformer,
                self.vae)

    def memory_layout(self) -> MemoryLayout:
        """HunyuanVideo's, SigLIP with the text encoders and the history's embedding a
        transformer call."""
        transformer = self.transformer
        return MemoryLayout(
            transformer=transformer,
            blocks=(transformer.transformer_blocks, transformer.single_transformer_blocks),
            text_encoders=(self.text_encoder, self.text_encoder_2, self.image_encoder),
            text_calls=((self.text_encoder, "hidden_states"),
                        (self.text_encoder_2, "forward_pooled"), (self.image_encoder, "forward")),
            vae=self.vae, transformer_calls=("prepare_text", "prepare_history"))

    def encode_image(self, image: Any, height: int, width: int) -> np.ndarray:
        """SigLIP's last hidden state (1, 729, 1152) of the picture. diffusers:
        `encode_image`."""
        _, picture = framepack_pixels(image, height, width)
        with self.on_gpu(self.image_encoder):
            embeds = self.image_encoder(siglip_pixels(picture, self.processor_config))
            return embeds.numpy().astype(np.float32)  # type: ignore[no-any-return]

    def image_latents(self, image: Any, height: int, width: int, generator: Any
                      ) -> np.ndarray:
        """The picture's VAE latents (1, 16, 1, h, w) times the scaling factor, the
        posterior sampled with `generator`. diffusers: `prepare_image_latents`."""
        pixels, _ = framepack_pixels(image, height, width)
        spatial = int(self.vae.spatial_compression_ratio)

        def encode(vae: Any) -> np.ndarray:
            weight = next(iter(vae.parameters()))
            video = asarray(pixels, dtype=weight.dtype, device=weight.device)
            noise = generator.standard_normal(
                (1, int(vae.config["latent_channels"]), 1, height // spatial, width // spatial))
            z = vae.encode(video, noise=noise).numpy().astype(np.float32)
            check_encoded(z, vae)
            return z * np.float32(vae.scaling_factor)
        return self._with_vae(encode)

    def _decoded(self, latents: np.ndarray) -> np.ndarray:
        """Latents (B, C, F, h, w) decoded, (B, 3, T, H, W) in [-1, 1] as the VAE gives them
        (the sections are joined before the pictures are clipped, as diffusers does)."""
        def run(vae: Any) -> np.ndarray:
            weight = next(iter(vae.parameters()))
            z = asarray(latents / np.float32(vae.scaling_factor), dtype=weight.dtype,
                        device=weight.device)
            video = vae.decode(z).numpy().astype(np.float32)
            check_decoded(video, vae)
            return video  # type: ignore[no-any-return]
        self._next_phase()
        return self._with_vae(run)

    def _schedule(self, latents_shape: tuple[int, ...], steps: int
                  ) -> FlowMatchEulerDiscreteScheduler:
        """A section's scheduler over sigmas 1 .. 1/steps; mu of its window's tokens (at most
        log 7) where the folder's scheduler shifts dynamically."""
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        sigmas = np.linspace(1.0, 0.0, steps + 1)[:-1]
        if scheduler.config["use_dynamic_shifting"]:
            tokens = math.prod(latents_shape[2:]) // int(self.transformer.config["patch_size"]) ** 2
            mu = min(calculate_shift(tokens, self.scheduler_config), math.log(7.0))
            scheduler.set_timesteps(sigmas=sigmas, mu=mu)
        else:
            scheduler.set_timesteps(sigmas=sigmas)
        return scheduler

    def _denoise(self, latents: np.ndarray, scheduler: Any, prepared: list[tuple[Any, Any]],
                 packed: Any, guidance: np.ndarray, scale: np.float32, branches: list[Any],
                 callback: StepCallback | None) -> np.ndarray:
        """A section's latents denoised: the transformer's velocity of the prompt (`prepared`
        [0]) with the packed history, guided by the negative's (`prepared[1]`, true CFG)
        where there is one."""
        model = self.transformer

        def predict(x: np.ndarray, t: Any, i: int) -> tuple[np.ndarray, None]:
            sample = asarray(x, dtype=model.dtype, device=model.device)
            timestep = np.full(1, np.float32(t), np.float32)

            def run(side: int) -> np.ndarray:
                text, pooled = prepared[side]
                out = model(sample, timestep, text, None, pooled, guidance=guidance,
                            history=packed, cache=branches[side])
                return out.numpy().astype(np.float32)  # type: ignore[no-any-return]
            flow = run(0)
            if len(prepared) > 1:
                base = run(1)
                flow = base + scale * (flow - base)
            return flow, None
        return scheduler_loop(latents, scheduler.timesteps, scheduler, predict,
                              dtype=np.float32, callback=callback)

    def __call__(self, prompt: str | Sequence[str], *, image: Any = None,  # type: ignore[override]
                 negative_prompt: str | None = None, height: int = 640, width: int = 640,
                 num_frames: int = 129, num_inference_steps: int = 25,
                 guidance_scale: float = 10.0, true_cfg_scale: float = 1.0,
                 latent_window_size: int = 9, sampling_type: str = "inverted_anti_drifting",
                 seed: int = 0, rng: str = "torch", sampler: str = "diffusers",
                 max_sequence_length: int = MAX_SEQUENCE_LENGTH,
                 callback: StepCallback | None = None, cache: StepCache | None = None,
                 section_callback: Callable[[int, int], None] | None = None,
                 last_image: Any = None) -> np.ndarray:
        """The video (1, T, height, width, 3) float in [0, 1] animating `image` (PIL or HxWx3
        uint8) for one prompt. `callback(done, total, latents)` after every step of every
        section (done and total count all sections' steps; False stops);
        `section_callback(k, count)` as section k begins; `cache`: First Block Cache;
        `last_image`: the frame to end on (inverted_anti_drifting only).
        diffusers: `HunyuanVideoFramepackPipeline(image=, prompt=, negative_prompt=,
        last_image=, height=, width=, num_frames=, num_inference_steps=, guidance_scale=,
        true_cfg_scale=, latent_window_size=, sampling_type=,
        generator=torch.Generator().manual_seed(seed), output_type="np").frames`."""
        prompts = prompt_list(prompt)
        if len(prompts) != 1:
            raise ValueError(f"FramePack makes one video at a time: give one prompt, not "
                             f"{len(prompts)}")
        if sampling_type not in SAMPLING_TYPES:
            raise ValueError(f"sampling_type must be one of {SAMPLING_TYPES} (FramePackI2V_HY "
                             f"or F1's), got {sampling_type!r}")
        if last_image is not None and sampling_type != "inverted_anti_drifting":
            raise ValueError("last_image needs sampling_type 'inverted_anti_drifting' (the "
                             "video made backwards from its end)")
        if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) \
                or num_frames < 1 or latent_window_size < 1:
            raise ValueError(f"frames and latent_window_size must be at least 1, got "
                             f"{num_frames} and {latent_window_size}")
        if not np.isfinite(true_cfg_scale) or not np.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale and true_cfg_scale must be numbers, got "
                             f"{guidance_scale} and {true_cfg_scale}")
        self.check(height=height, width=width, num_frames=1, steps=num_inference_steps,
                   rng=rng, sampler=sampler, cache=cache, image=image)
        texts = self.encode_prompt(prompts, max_sequence_length)
        negatives = self.encode_prompt([negative_prompt], max_sequence_length) \
            if true_cfg_scale > 1 and negative_prompt is not None else None
        generator = make_generator(rng, seed)
        embeds = self.encode_image(image, height, width)
        image_latents = self.image_latents(image, height, width, generator)
        # diffusers encodes the last frame's SigLIP states too but reads only its latents
        last_latents = None if last_image is None else self.image_latents(
            last_image, height, width, generator)
        model, temporal = self.transformer, self.temporal_factor
        spatial = int(self.vae.spatial_compression_ratio)
        count = section_count(num_frames, latent_window_size, temporal)
        shape = (1, int(model.config["in_channels"]), latent_window_size, height // spatial,
                 width // spatial)
        guidance = np.full(1, guidance_scale, model.dtype) * model.dtype.type(1000)
        scale, progress = np.float32(true_cfg_scale), _Progress(callback, count)
        history = empty_history(sampling_type, image_latents)
        total = int(sampling_type == "vanilla")  # the first frame is already in its history
        video: np.ndarray | None = None
        for k in range(count):
            if section_callback is not None:
                section_callback(k, count)
            section = pack(sampling_type, k, count, latent_window_size, history, image_latents,
                           last_latents)
            latents = generator.standard_normal(shape).astype(np.float32)
            scheduler = self._schedule(shape, num_inference_steps)
            # each section denoises from fresh noise: its own step cache state
            branches = [None if cache is None or (side and negatives is None)
                        else cache.branch() for side in range(2)]
            self._next_phase()
            with self.on_gpu(self.transformer):
                prepared = [(model.prepare_text(states, mask, embeds), pooled) for states, mask,
                            pooled in ((texts, negatives) if negatives else (texts,))]
                packed = model.prepare_history(
                    (latent_window_size, shape[3] // 2, shape[4] // 2), section.indices,
                    section.parts, 1)

                latents = self._denoise(latents, scheduler, prepared, packed, guidance, scale,
                                        branches, progress)
            progress.done += num_inference_steps
            history, total, fresh = appended(sampling_type, k, count, latent_window_size,
                                             history, total, latents, image_latents)
            current = self._decoded(fresh)
            if video is None:
                video = current
            else:
                overlap = (latent_window_size - 1) * temporal + 1
                video = soft_append(current, video, overlap) \
                    if sampling_type == "inverted_anti_drifting" \
                    else soft_append(video, current, overlap)
            if progress.stopped:
                break
        assert video is not None
        frames = (video.shape[2] - 1) // temporal * temporal + 1
        return np.clip(video[:, :, :frames] / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 4, 1)
