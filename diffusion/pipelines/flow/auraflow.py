"""AuraFlow, as diffusers' AuraFlowPipeline draws it: the prompt's tokens padded to 256, UMT5's
states of them (the padding masked out and zeroed) condition the AuraFlow transformer, which
predicts the flow of 4-channel SDXL latents; classifier-free guidance with the negative prompt
("" when none) in a second pass; FlowMatchEulerDiscreteScheduler over its own timesteps
(linear from 1000 down to its last training sigma's, shifted by the config's constant); SDXL's
VAE decodes. With the torch RNG a seed gives diffusers' picture.

    pipe = AuraFlowPipeline.from_pretrained("AuraFlow-v0.3")
    images = pipe("a red circle", height=1024, width=1024, guidance_scale=3.5, seed=7)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ...loaders.auraflow import load_auraflow_file, load_auraflow_folder, pad_token
from ...loaders.formats.diffusers_folder import component_config
from ...loaders.sd.vae_file import load_vae
from ...loaders.vae_kind import require_vae
from ...models import AutoencoderKL
from ...models.auraflow import AuraFlowTransformer2DModel
from ...models.step_cache import StepCache
from ...models.t5 import UMT5EncoderModel
from ...noise.rng import make_generator
from ...sampling.guidance import combine
from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ...text.t5_tokenizer import T5Tokenizer
from .flow_memory import load_network
from .flow_replay import StepReplay
from .start import StepCallback, check_call, check_sides, run_euler

__all__ = ["AuraFlowPipeline", "auraflow_schedule"]

MAX_LENGTH = 256  # AuraFlowPipeline's max_sequence_length


def auraflow_schedule(config: dict[str, Any], steps: int) -> FlowMatchEulerDiscreteScheduler:
    """AuraFlowPipeline's schedule: the scheduler's own `set_timesteps(steps)` (no sigmas
    given), from its first step."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    scheduler.set_timesteps(steps)
    scheduler.set_begin_index(0)
    return scheduler


class AuraFlowPipeline:
    """AuraFlow txt2img (and img2img) on gpustd. Components as diffusers names them;
    `scheduler_config` is the folder's `scheduler/scheduler_config.json`."""

    def __init__(self, *, transformer: AuraFlowTransformer2DModel, vae: AutoencoderKL,
                 text_encoder: UMT5EncoderModel, tokenizer: T5Tokenizer,
                 scheduler_config: dict[str, Any], modules: Sequence[str] = ()) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.modules = list(modules)
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        # the transformer's step, replayed in the plain memory mode (flow_replay): CFG's two
        # passes share one recording (both texts padded to 256 tokens)
        self.step_replay = StepReplay(_transformer_step)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        transformer_file: str | os.PathLike[str] | None = None,
                        offload: bool = False) -> AuraFlowPipeline:
        """Load an AuraFlow diffusers folder (`load_auraflow_folder`) onto `device` in
        `dtype`; `transformer_file`: a single-file transformer in fal's names
        (`load_auraflow_file`) in place of the folder's; `offload`: each network goes to host
        memory as soon as it is loaded, for a memory mode to bring in as it runs
        (flow_memory)."""
        skip = ("transformer",) if transformer_file is not None else ()
        weights = load_auraflow_folder(path, variant=variant, skip=skip)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        if transformer_file is not None:
            transformer = load_auraflow_file(transformer_file,
                                             config=component_config(path, "transformer"))
        assert transformer is not None and text_encoder is not None
        width = text_encoder.config.get("d_model")
        wanted = transformer.config.get("joint_attention_dim", 2048)
        if wanted != width:
            raise ValueError(f"the text encoder's states are {width} wide, the transformer "
                             f"reads {wanted}: give the folder's own text encoder")
        place = {"dtype": dtype, "device": device or default_device()}
        # SDXL's VAE overflows float16 (its config's force_upcast): float32, as
        # AuraFlowPipeline upcasts it to decode
        upcast = weights.vae.config.get("force_upcast", True)
        vae_place = {**place, "dtype": np.float32} if upcast else place
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        encoder = load(lambda: UMT5EncoderModel(text_encoder.config, **place), text_encoder)
        return cls(
            transformer=load(lambda: AuraFlowTransformer2DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKL(weights.vae.config, **vae_place), weights.vae),
            text_encoder=encoder,
            tokenizer=T5Tokenizer(weights.tokenizer_dir, max_length=MAX_LENGTH,
                                  pad_token=pad_token(weights.tokenizer_dir)),
            scheduler_config=weights.scheduler_config)

    def use_vae_file(self, path: str | os.PathLike[str]) -> None:
        """Decode (and encode) with the SDXL VAE in the file `path`, in the place, dtype and
        config of the folder's. WeightsError in one line for another family's VAE."""
        require_vae(path, "2d", int(self.vae.config["latent_channels"]), model="AuraFlow",
                    usual="SDXL's sdxl_vae.safetensors")
        weight = self.vae.decoder.conv_in.weight
        self.vae = load_vae(path, dtype=weight.dtype, device=weight.device,
                            config=self.vae.config)

    def encode_prompt(self, prompts: Sequence[str]) -> Tensor:
        """The prompts' states (B, 256, d_model) in the transformer's dtype: UMT5's states of
        the padded tokens, the padding's zeroed. diffusers: `AuraFlowPipeline.encode_prompt`."""
        ids, mask = self.tokenizer.encode(list(prompts))
        states = self.text_encoder(ids, mask)
        dtype = self.transformer.proj_out.weight.dtype
        keep = asarray(mask[:, :, None].astype(dtype), device=states.device)
        return states.astype(dtype) * keep

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 3.5, negative_prompt: str | Sequence[str] = "",
                 cache: StepCache | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], None]:
        """The guided transformer as `flow(x, t)` for `prompts` at height x width: x (B, 4,
        h, w) float32 latents, t the scheduler's timestep (0..1000), the flow back (float32);
        guidance applies when guidance_scale > 1 (`negative_prompt`, "" included, its own
        pass). Also the latents' shape and the schedule's mu (None: a constant shift).
        `cache`: the generation's step cache, of which each pass takes a branch."""
        scale = self.vae_scale_factor
        if height < 2 * scale or width < 2 * scale:
            raise ValueError(f"height and width must be at least {2 * scale}, got "
                             f"{height}x{width}")
        weight = self.transformer.proj_out.weight
        batch, guided = len(prompts), guidance_scale > 1
        passes = [self.encode_prompt(prompts)]
        if guided:
            negatives = ([negative_prompt] * batch if isinstance(negative_prompt, str)
                         else list(negative_prompt))
            passes.append(self.encode_prompt(negatives))
        branches = [None if cache is None else cache.branch() for _ in passes]
        # replayed unless a step cache decides on the host (flow_replay)
        step = self.step_replay.step(self.transformer) if cache is None else None

        def predict(latents: Tensor, states: Tensor, timestep: np.ndarray,
                    branch: Any) -> np.ndarray:
            if step is not None:
                out = step(latents, states, asarray(timestep, device=latents.device))
            else:
                out = self.transformer(latents, states, timestep, cache=branch)
            return out.numpy().astype(np.float32)

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            latents = asarray(x, dtype=weight.dtype, device=weight.device)
            timestep = np.full(batch, np.float32(t) / np.float32(1000), np.float32)
            preds = [predict(latents, states, timestep, branch)
                     for states, branch in zip(passes, branches)]
            return preds[0] if not guided else combine(preds[1], preds[0], None,
                                                       np.float32(guidance_scale))

        shape = (batch, self.transformer.config["in_channels"], int(height) // scale,
                 int(width) // scale)
        return flow, shape, None

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | Sequence[str] = "",
                 height: int = 1024, width: int = 1024, num_inference_steps: int = 50,
                 guidance_scale: float = 3.5, seed: int = 0, rng: str = "torch",
                 latents: np.ndarray | None = None, image: Any = None, mask_image: Any = None,
                 strength: float = 0.6, callback: StepCallback | None = None,
                 output_type: str = "np", cache: StepCache | None = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 4, H/8, W/8) ("latent"). Guidance as `velocity`.
        `seed` and `rng` ("torch", as diffusers; "numpy") draw the starting noise unless
        `latents` is given; `image` (PIL or HxWx3 uint8; with `mask_image`, white = repaint)
        starts from that picture at `strength`, as FLUX's img2img and inpainting do
        (diffusers has no AuraFlow img2img); `callback(done, total, latents)` after every
        step (False stops); `cache`: step caching. diffusers: `AuraFlowPipeline(prompt,
        negative_prompt=, height=, width=, num_inference_steps=, guidance_scale=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        check_sides(height, width, self.vae_scale_factor * 2, "AuraFlow")
        # 1. conditioning, as a function of the latents and the timestep
        flow, shape, _ = self.velocity(prompts, height=height, width=width,
                                       guidance_scale=guidance_scale,
                                       negative_prompt=negative_prompt, cache=cache)
        # 2. the schedule, 3. the start, Euler steps along the flow, the pictures
        scheduler = auraflow_schedule(self.scheduler_config, num_inference_steps)
        return run_euler(self.vae, scheduler, shape, flow, generator=make_generator(rng, seed),
                         latents=latents, image=image, mask=mask_image, strength=strength,
                         callback=callback, output_type=output_type,
                         device=self.transformer.proj_out.weight.device, lender=self)


def _transformer_step(transformer: AuraFlowTransformer2DModel, latents: Tensor, states: Tensor,
                      timestep: Tensor) -> Tensor:
    """The transformer's call of a step (StepReplay's captured function): the latents, the
    prompt's masked states and the sigmas (a float32 Tensor in 0..1), all inputs."""
    return transformer(latents, states, timestep)
