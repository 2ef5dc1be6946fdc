"""HunyuanVideo (1.0) text-to-video, as diffusers' HunyuanVideoPipeline draws it: the prompts
read by LLaVA-Llama-3's language model in the pipeline's template (its states two layers
before the last, the template's 95 tokens dropped, padded to 256 with a mask) and by CLIP
(its pooled output, the transformer's `pooled_projections`: models.hunyuan_video_prompt);
noise of (B, 16, 1 + (frames - 1) / 4, H / 8, W / 8) latents; FlowMatchEulerDiscreteScheduler
over sigmas 1 .. 1/n with the folder's constant shift (7); the guidance-distilled
transformer reading the embedded guidance scale (`guidance`: the scale times 1000) at every
step, with true classifier-free guidance `neg + s (pos - neg)` besides where `true_cfg_scale`
> 1 and a negative prompt is given (diffusers' `do_true_cfg`); the VAE decoding the latents
divided by its scaling factor. With the torch RNG a seed gives diffusers' video
(`generator=torch.Generator("cpu").manual_seed(seed)`).

The memory modes (--medvram, --lowvram, --max-vram) are the flow families' (flow_memory: Llama
and CLIP one unit, the transformer whole or its double and single blocks streamed, the VAE),
each phase starting with the last one's units sent to host memory; no network runs from a
capture, so the frames are the plain mode's, bitwise.

    pipe = HunyuanVideoPipeline.from_pretrained("HunyuanVideo")
    frames = pipe("a cat walks on the grass", height=544, width=960, num_frames=61, seed=7)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import asarray

from ...loaders.hunyuan_video.folder import load_hunyuan_video_folder
from ...models.clip import CLIPTextModel
from ...models.hunyuan_video import HunyuanVideoTransformer3DModel
from ...models.hunyuan_video_prompt import MAX_SEQUENCE_LENGTH, clip_pooled, llama_states
from ...models.hunyuan_video_vae import AutoencoderKLHunyuanVideo
from ...models.llm import LLMTextModel
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.scheduler_loop import scheduler_loop
from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ...text.llm_tokenizer import LLMTokenizer
from ...text.tokenizer import CLIPTokenizer
from ..flow.flow_memory import MemoryLayout, load_network
from .flow_video import FlowVideoPipeline, prompt_list

__all__ = ["HunyuanVideoPipeline", "hunyuan_video_layout"]

StepCallback = Callable[[int, int, np.ndarray], bool | None]
Text = tuple[np.ndarray, np.ndarray, np.ndarray]  # Llama's states, their mask, CLIP's pooled


def hunyuan_video_layout(pipe: Any) -> MemoryLayout:
    """What the memory modes (flow_memory) move of a HunyuanVideo pipeline: Llama and CLIP as
    one unit, the transformer (brought in by `prepare_text` too, a run's text part) and its
    double- and single-stream blocks, the VAE."""
    transformer = pipe.transformer
    return MemoryLayout(transformer=transformer,
                        blocks=(transformer.transformer_blocks,
                                transformer.single_transformer_blocks),
                        text_encoders=(pipe.text_encoder, pipe.text_encoder_2),
                        text_calls=((pipe.text_encoder, "hidden_states"),
                                    (pipe.text_encoder_2, "forward_pooled")),
                        vae=pipe.vae, transformer_calls=("prepare_text",))


class HunyuanVideoPipeline(FlowVideoPipeline):
    """A loaded HunyuanVideo diffusers folder (module docstring). Components as diffusers
    names them; `offload`: one network's weights on the GPU at a time; the memory modes:
    `set_memory_mode`."""

    family = "HunyuanVideo"
    vae: AutoencoderKLHunyuanVideo

    def __init__(self, *, transformer: HunyuanVideoTransformer3DModel,
                 vae: AutoencoderKLHunyuanVideo, text_encoder: LLMTextModel,
                 tokenizer: LLMTokenizer, text_encoder_2: CLIPTextModel,
                 tokenizer_2: CLIPTokenizer, scheduler_config: dict[str, Any],
                 offload: bool = False) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.scheduler_config, self.offload = dict(scheduler_config), offload
        self.image_to_video = False
        self._memory = None  # set_memory_mode's

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> HunyuanVideoPipeline:
        """Load a HunyuanVideoPipeline diffusers folder (`load_hunyuan_video_folder`) onto
        `device` in `dtype`; `offload`: each network goes to host memory as soon as it is
        loaded, and comes to the GPU only while it runs. ValueError for an image-to-video
        folder (hunyuan_video_i2v.HunyuanVideoImageToVideoPipeline loads it;
        `hunyuan_video_i2v.hunyuan_video_class` says which)."""
        weights = load_hunyuan_video_folder(path, variant=variant)
        if weights.vision is not None:
            raise ValueError(f"{path} is HunyuanVideo-I2V (image to video): load it with "
                             "HunyuanVideoImageToVideoPipeline")
        place, load = cls._placing(dtype, device, offload)
        return cls(**cls._loaded(weights, load, place), offload=offload)

    @staticmethod
    def _placing(dtype: Any, device: Device | None, offload: bool
                 ) -> tuple[dict[str, Any], Any]:
        """(where the networks go: dtype and device, `load_network` there)."""
        place = {"dtype": dtype, "device": device or default_device()}
        return place, partial(load_network, device=place["device"], offload_to_host=offload)

    @staticmethod
    def _loaded(weights: Any, load: Any, place: dict[str, Any]) -> dict[str, Any]:
        """The folder's networks (`load`ed in `place`), tokenizers and scheduler config by
        __init__'s names."""
        transformer, llama, clip = weights.transformer, weights.text_encoder, \
            weights.text_encoder_2
        assert transformer is not None and llama is not None and clip is not None
        assert weights.tokenizer_2_dir is not None
        return dict(
            text_encoder=load(lambda: LLMTextModel(llama.config, **place), llama),
            text_encoder_2=load(lambda: CLIPTextModel(clip.config, **place), clip),
            transformer=load(lambda: HunyuanVideoTransformer3DModel(transformer.config,
                                                                    **place), transformer),
            vae=load(lambda: AutoencoderKLHunyuanVideo(weights.vae.config, **place),
                     weights.vae),
            tokenizer=LLMTokenizer(weights.tokenizer_dir),
            tokenizer_2=CLIPTokenizer.from_pretrained(weights.tokenizer_2_dir),
            scheduler_config=weights.scheduler_config)

    def networks(self) -> tuple[Any, ...]:
        return (self.text_encoder, self.text_encoder_2, self.transformer, self.vae)

    def memory_layout(self) -> MemoryLayout:
        return hunyuan_video_layout(self)

    @property
    def size_multiple(self) -> int:
        """What height and width must be multiples of: the VAE's factor times the patch's."""
        return int(self.vae.spatial_compression_ratio) * int(
            self.transformer.config.get("patch_size") or 1)

    def encode_prompt(self, prompts: Sequence[str],
                      max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> Text:
        """(Llama's states (B, L, 4096), their mask (B, L), CLIP's pooled output (B, 768)) of
        `prompts`, float32 (the mask int64). diffusers: `HunyuanVideoPipeline.encode_prompt(
        prompts, max_sequence_length=)`."""
        with self.on_gpu(self.text_encoder, self.text_encoder_2):
            states, mask = llama_states(self.text_encoder, self.tokenizer, prompts,
                                        max_sequence_length)
            pooled = clip_pooled(self.text_encoder_2, self.tokenizer_2, prompts)
        return states, mask, pooled

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | None = None,
                 height: int = 720, width: int = 1280, num_frames: int = 129,
                 num_inference_steps: int = 50, guidance_scale: float = 6.0,
                 true_cfg_scale: float = 1.0, seed: int = 0, rng: str = "torch",
                 sampler: str = "diffusers", max_sequence_length: int = MAX_SEQUENCE_LENGTH,
                 callback: StepCallback | None = None, cache: StepCache | None = None,
                 image: Any = None) -> np.ndarray:
        """Videos for `prompt` (one or a list): (B, num_frames, height, width, 3) float in
        [0, 1]. `guidance_scale`: the embedded (distilled) guidance the transformer reads;
        `true_cfg_scale` > 1 with a `negative_prompt` (one for every prompt): true CFG
        besides, two transformer passes a step. `callback(done, total, latents)` after every
        step (False stops); `cache`: First Block Cache; `image`: refused (text to video
        only). diffusers: `HunyuanVideoPipeline(prompt, negative_prompt=, height=, width=,
        num_frames=, num_inference_steps=, guidance_scale=, true_cfg_scale=,
        generator=torch.Generator().manual_seed(seed), output_type="np").frames`."""
        prompts = prompt_list(prompt)
        self.check(height=height, width=width, num_frames=num_frames,
                   steps=num_inference_steps, rng=rng, sampler=sampler, cache=cache,
                   image=image)
        if not np.isfinite(true_cfg_scale) or not np.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale and true_cfg_scale must be numbers, got "
                             f"{guidance_scale} and {true_cfg_scale}")
        texts = self.encode_prompt(prompts, max_sequence_length)
        negatives = self.encode_prompt([negative_prompt] * len(prompts), max_sequence_length) \
            if true_cfg_scale > 1 and negative_prompt is not None else None
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1])
        channels = int(self.transformer.config["in_channels"])
        spatial = int(self.vae.spatial_compression_ratio)
        shape = (len(prompts), channels, (num_frames - 1) // self.temporal_factor + 1,
                 height // spatial, width // spatial)
        latents = make_generator(rng, seed).standard_normal(shape).astype(np.float32)
        # diffusers: torch.tensor([guidance_scale] * B, dtype=transformer_dtype) * 1000.0
        model = self.transformer
        guidance = np.full(len(prompts), guidance_scale, model.dtype) * model.dtype.type(1000)
        branches = [None if cache is None or (side and negatives is None) else cache.branch()
                    for side in range(2)]
        scale = np.float32(true_cfg_scale)
        prepared: list[tuple[Any, np.ndarray]] = []  # each side's text as the model reads it

        def predict(x: np.ndarray, t: Any, i: int) -> tuple[np.ndarray, None]:
            sample = asarray(x, dtype=model.dtype, device=model.device)
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

        self._next_phase()
        with self.on_gpu(self.transformer):
            # the prompt's kept tokens projected for the refiner, once a run (the refiner
            # itself reads the timestep: each step)
            for states, mask, pooled in (texts, *([negatives] if negatives else [])):
                prepared.append((model.prepare_text(states, mask), pooled))
            latents = scheduler_loop(latents, scheduler.timesteps, scheduler, predict,
                                     dtype=np.float32, callback=callback)
        return self._frames(latents)
