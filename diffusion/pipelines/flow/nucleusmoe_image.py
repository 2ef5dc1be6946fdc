"""NucleusMoE-Image, as diffusers' NucleusMoEImagePipeline draws it: the prompt after a fixed
system message in Qwen3-VL's chat template, read by Qwen3-VL's language model, whose
hidden_states[-8] condition the NucleusMoE transformer (models.nucleusmoe_image: a single
image stream attending to the text, mixture-of-experts feed-forwards); the model's output,
negated, is the flow FlowMatchEulerDiscreteScheduler steps from noise over sigmas 1 .. 1/n
shifted by the picture's size; Qwen-Image's VAE decodes. CFG for guidance_scale > 1 against
the negative prompt ("" when none), `neg + g * (pos - neg)` rescaled per token to the
positive prediction's norm. With the torch RNG, a seed gives diffusers' picture
(`generator=torch.Generator("cpu").manual_seed(seed)`).

    pipe = NucleusMoEImagePipeline.from_pretrained("NucleusMoE-Image")
    images = pipe("a cat holding a sign", height=1024, width=1024, num_inference_steps=50,
                  guidance_scale=4.0, seed=7)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ...loaders.nucleusmoe import load_nucleusmoe_folder
from ...models.llm import LLMTextModel
from ...models.nucleusmoe_image import NucleusMoEImageTransformer2DModel
from ...models.nucleusmoe_prompt import MAX_SEQUENCE_LENGTH, encode
from ...models.qwen_image_vae import AutoencoderKLQwenImage
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.model_sampling import calculate_shift
from ...sampling.scheduler_loop import scheduler_loop
from ...text.llm_tokenizer import LLMTokenizer
from .flow_memory import load_network
from .prompt_passes import prompt_passes
from .qwen_image import QwenVaePasses, pack, true_cfg, unpack
from .start import FlowStart, StepCallback, check_call, check_sides, flow_schedule

__all__ = ["NucleusMoEImagePipeline"]

Prompt = tuple[Tensor, np.ndarray | None]  # the states on the device, the mask (None: all)


class NucleusMoEImagePipeline(QwenVaePasses):
    """NucleusMoE-Image txt2img on gpustd. Components as diffusers names them;
    `scheduler_config` is the folder's `scheduler/scheduler_config.json`."""

    def __init__(self, *, transformer: NucleusMoEImageTransformer2DModel,
                 vae: AutoencoderKLQwenImage, text_encoder: LLMTextModel,
                 tokenizer: LLMTokenizer, scheduler_config: dict[str, Any],
                 modules: Sequence[str] = ()) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.modules = list(modules)
        self.vae_scale_factor = 2 ** len(vae.config["temperal_downsample"])

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> NucleusMoEImagePipeline:
        """Load a NucleusMoE-Image diffusers folder (`load_nucleusmoe_folder`) onto `device`
        in `dtype`; `offload`: each network goes to host memory as soon as it is loaded (the
        text encoder before the transformer loads), for a memory mode to bring in as it runs
        (flow_memory). ValueError in one line where the folder's parts do not fit together."""
        weights = load_nucleusmoe_folder(path, variant=variant)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        assert transformer is not None and text_encoder is not None
        hidden = text_encoder.config["hidden_size"]
        wanted = transformer.config.get("joint_attention_dim", 3584)
        if hidden != wanted:
            raise ValueError(f"the text encoder's states are {hidden} wide, the transformer "
                             f"reads {wanted}: give the NucleusMoE-Image folder's own text "
                             "encoder")
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        # the text encoder first: with `offload` it has left the GPU when the transformer loads
        encoder = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        return cls(
            transformer=load(lambda: NucleusMoEImageTransformer2DModel(transformer.config,
                                                                       **place), transformer),
            vae=load(lambda: AutoencoderKLQwenImage(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config)

    def encode_prompt(self, prompt: str, max_sequence_length: int = MAX_SEQUENCE_LENGTH
                      ) -> Prompt:
        """`prompt`'s states (1, L, hidden) in the transformer's dtype on its device and
        their mask (None when no place is padding). diffusers: `encode_prompt(prompt)`."""
        states, mask = encode(self.text_encoder, self.tokenizer, prompt,
                              max_sequence_length=max_sequence_length)
        tensor = asarray(states, dtype=self.transformer.dtype, device=self.transformer.device)
        return tensor, None if mask.all() else mask

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 4.0, negative_prompt: str | Sequence[str] = "",
                 max_sequence_length: int = MAX_SEQUENCE_LENGTH,
                 cache: StepCache | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """The model as `flow(x, t)` for `prompts` at height x width: x (B, C, h, w) float32
        latents, t the scheduler's timestep (0..1000), the flow (the model's output negated,
        with the renormalised CFG against `negative_prompt` when guidance_scale > 1); also
        the latents' shape and the schedule's `mu`. `cache`: a step cache, refused (the
        mixture of experts' blocks have none)."""
        if cache is not None:
            raise ValueError("NucleusMoE-Image has no step cache: drop --cache")
        scale = self.vae_scale_factor * 2
        if height < scale or width < scale:
            raise ValueError(f"height and width must be at least {scale}, got {height}x{width}")
        batch, guided = len(prompts), guidance_scale > 1
        passes = prompt_passes(lambda p: self.encode_prompt(p, max_sequence_length),
                               prompts, negative_prompt, guided, None)
        rows, columns = int(height) // scale, int(width) // scale
        dtype, device = self.transformer.dtype, self.transformer.device

        def predict(tokens: Tensor, t: np.ndarray, text: Prompt) -> np.ndarray:
            states, mask = text
            out = self.transformer(tokens, states, t, rows, columns, mask)
            return out.numpy().astype(np.float32)

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            timestep = np.array([np.float32(t) / np.float32(1000)], np.float32)
            out = []
            for i in range(len(x)):
                tokens = asarray(pack(x[i: i + 1]), dtype=dtype, device=device)
                k = i % batch  # picture i's prompt (several pictures a prompt: in turn)
                pred = predict(tokens, timestep, passes.texts[k])
                if guided:
                    pred = true_cfg(pred, predict(tokens, timestep, passes.negatives[k]),
                                    guidance_scale)
                out.append(unpack(-pred, 2 * rows, 2 * columns))
            return np.concatenate(out)

        channels = self.transformer.config["in_channels"] // 4
        mu = calculate_shift(rows * columns, self.scheduler_config)
        return flow, (batch, channels, 2 * rows, 2 * columns), mu

    def __call__(self, prompt: str | Sequence[str], *, height: int = 1024, width: int = 1024,
                 num_inference_steps: int = 50, guidance_scale: float = 4.0,
                 negative_prompt: str | Sequence[str] = "", seed: int = 0, rng: str = "torch",
                 max_sequence_length: int = MAX_SEQUENCE_LENGTH,
                 latents: np.ndarray | None = None, image: Any = None, mask_image: Any = None,
                 strength: float = 0.6, callback: StepCallback | None = None,
                 output_type: str = "np", cache: StepCache | None = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 16, H/8, W/8) ("latent"). `seed` and `rng`
        ("torch", as diffusers; "numpy") draw the starting noise unless `latents` is given.
        `image` (PIL or HxWx3 uint8; with `mask_image`, white = repaint) starts from that
        picture at `strength`, as the other flow pipelines' img2img and inpainting
        (diffusers has no NucleusMoE-Image pipeline for them). `callback(done, total,
        latents)` after every step (False stops); `cache` refused as `velocity` says.
        diffusers: `NucleusMoEImagePipeline(prompt, negative_prompt=, guidance_scale=,
        height=, width=, num_inference_steps=, generator=torch.Generator().manual_seed(seed),
        output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        check_sides(height, width, self.vae_scale_factor * 2, "NucleusMoE-Image")
        flow, shape, mu = self.velocity(prompts, height=height, width=width,
                                        guidance_scale=guidance_scale,
                                        negative_prompt=negative_prompt,
                                        max_sequence_length=max_sequence_length, cache=cache)
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu)
        start = FlowStart(self.vae, scheduler, shape, generator=make_generator(rng, seed),
                          latents=latents, image=image, mask=mask_image, strength=strength,
                          encode=self.encode_image, scale_factor=self.vae_scale_factor)
        x = scheduler_loop(start.latents, start.timesteps, scheduler,
                           lambda x, t, i: (flow(x, t), None), dtype=np.float32,
                           after_step=lambda i, x: start.blend(x, i), callback=callback)
        return x if output_type == "latent" else self.decode(x)
