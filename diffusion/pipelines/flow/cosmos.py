"""NVIDIA Cosmos Predict2 Text2Image, as diffusers' Cosmos2TextToImagePipeline draws it: T5's
last hidden states of the prompt (512 tokens, zeros after its own) condition the Cosmos
transformer, which reads the latents as one frame of a video. The sampler is Euler in the
EDM parameterisation: Karras sigmas from 80 down to 0.002 (rho 7; the last step repeats
0.002, so it moves nothing), the transformer reads x / (sigma + 1) at t = sigma / (sigma +
1), its denoised estimate is (1 - t) x - t F, CFG on those estimates as diffusers has it
(`cond + g (cond - uncond)` where g > 1, Cosmos' long default negative prompt where none is
given); Wan 2.1's video VAE decodes the one frame. With the torch RNG, a seed gives diffusers'
picture (`generator=torch.Generator("cpu").manual_seed(seed)`). Diffusers' safety checker
(cosmos_guardrail, a separate download) is not run.

    pipe = Cosmos2TextToImagePipeline.from_pretrained("Cosmos-Predict2-2B-Text2Image")
    images = pipe("a red circle", num_inference_steps=35, guidance_scale=7.0, seed=7)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ...loaders.cosmos import load_cosmos_folder
from ...models.cosmos import CosmosTransformer3DModel
from ...models.t5 import T5EncoderModel
from ...models.wan_vae import AutoencoderKLWan
from ...noise.rng import make_generator
from ...text.t5_tokenizer import T5Tokenizer
from ..finite import check_decoded
from .flow_memory import load_network
from .flow_replay import StepReplay, lent_steps
from .start import StepCallback, check_call, check_sides

__all__ = ["COSMOS_NEGATIVE_PROMPT", "Cosmos2TextToImagePipeline", "karras_sigmas"]

# diffusers' DEFAULT_NEGATIVE_PROMPT of the Cosmos pipelines: used where none is given
COSMOS_NEGATIVE_PROMPT = (
    "The video captures a series of frames showing ugly scenes, static with no motion, motion "
    "blur, over-saturation, shaky footage, low resolution, grainy texture, pixelated images, "
    "poorly lit areas, underexposed and overexposed scenes, poor color balance, washed out "
    "colors, choppy sequences, jerky movements, low frame rate, artifacting, color banding, "
    "unnatural transitions, outdated special effects, fake elements, unconvincing visuals, "
    "poorly edited content, jump cuts, visual noise, and flickering. Overall, the video is of "
    "poor quality.")
# Cosmos2TextToImagePipeline's EDM constants (it writes them into the scheduler's config)
SIGMA_MAX, SIGMA_MIN, SIGMA_DATA = 80.0, 0.002, 1.0


def karras_sigmas(steps: int) -> np.ndarray:
    """The steps + 1 sigmas (float32) the pipeline walks: Karras' from SIGMA_MAX to SIGMA_MIN
    (rho 7), then SIGMA_MIN again in place of the final 0. diffusers:
    `FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True)` set to `steps` sigmas, its last
    replaced (`final_sigmas_type` "sigma_min")."""
    ramp = np.linspace(0, 1, steps)
    low, high = SIGMA_MIN ** (1 / 7.0), SIGMA_MAX ** (1 / 7.0)
    sigmas = ((high + ramp * (low - high)) ** 7.0).astype(np.float32)
    return np.concatenate([sigmas, sigmas[-1:]])


class Cosmos2TextToImagePipeline:
    """Cosmos Predict2 txt2img on gpustd. Components as diffusers names them;
    `scheduler_config` is the folder's `scheduler/scheduler_config.json`."""

    def __init__(self, *, transformer: CosmosTransformer3DModel, vae: AutoencoderKLWan,
                 text_encoder: T5EncoderModel, tokenizer: T5Tokenizer,
                 scheduler_config: dict[str, Any]) -> None:
        if not scheduler_config.get("use_karras_sigmas"):
            raise ValueError("this Cosmos folder's scheduler does not use Karras sigmas, which "
                             "Cosmos2TextToImagePipeline's EDM sampling needs; fix "
                             "scheduler/scheduler_config.json (use_karras_sigmas: true)")
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.modules: list[str] = []
        self.vae_scale_factor = vae.spatial_factor
        # the transformer's step, replayed in the plain memory mode (flow_replay)
        self.step_replay = StepReplay(_transformer_step)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> Cosmos2TextToImagePipeline:
        """Load a Cosmos Predict2 Text2Image diffusers folder (`load_cosmos_folder`) onto
        `device` in `dtype`; `offload`: each network to host memory once loaded."""
        weights = load_cosmos_folder(path, variant=variant)
        transformer, t5 = weights.transformer, weights.text_encoder
        assert transformer is not None and t5 is not None
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        encoder = load(lambda: T5EncoderModel(t5.config, **place), t5)
        return cls(
            transformer=load(lambda: CosmosTransformer3DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKLWan(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, tokenizer=T5Tokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config)

    def encode_prompt(self, prompts: Sequence[str], max_sequence_length: int = 512
                      ) -> np.ndarray:
        """T5's last hidden states (B, max_sequence_length, d_model) float32 of `prompts`,
        zeros after each prompt's tokens. diffusers: `_get_t5_prompt_embeds`."""
        ids, mask = self.tokenizer.encode(list(prompts), max_sequence_length)
        states = self.text_encoder(ids, mask).numpy().astype(np.float32)
        return states * (mask[:, :, None] != 0)  # type: ignore[no-any-return]

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Pictures (B, H, W, 3) in [0, 1] from the sampler's latents (B, C, h, w): scaled
        back by the VAE's latents_std and latents_mean (sigma_data 1), Wan's VAE decoding
        them as one frame. VaeNonFiniteError where it gave NaN or infinity."""
        vae = self.vae
        z = vae.denormalize(asarray(latents[:, :, None] / SIGMA_DATA,
                                    dtype=vae.post_quant_conv.weight.dtype, device=vae.device))
        video = vae.decode(z).numpy().astype(np.float32)[:, :, 0]
        check_decoded(video, vae)
        return np.clip(video / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)  # type: ignore[no-any-return]

    def __call__(self, prompt: str | Sequence[str], *, height: int = 768, width: int = 1360,
                 num_inference_steps: int = 35, guidance_scale: float = 7.0,
                 negative_prompt: str | Sequence[str] | None = None, seed: int = 0,
                 rng: str = "torch", max_sequence_length: int = 512,
                 latents: np.ndarray | None = None, callback: StepCallback | None = None,
                 output_type: str = "np") -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, C, height / 8, width / 8) ("latent").
        `negative_prompt`: None or "" gives Cosmos' default. `seed` and `rng` ("torch", as
        diffusers; "numpy") draw the starting noise (times sigma 80) unless `latents`
        (B, C, h, w, unscaled noise) is given. `callback(done, total, latents)` after every
        step (False stops). diffusers: `Cosmos2TextToImagePipeline(prompt, height=, width=,
        num_inference_steps=, guidance_scale=, negative_prompt=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        check_sides(height, width, 2 * self.vae_scale_factor, "Cosmos Predict2")
        batch = len(prompts)
        states = self.encode_prompt(prompts, max_sequence_length)
        guided = guidance_scale > 1  # the pipeline's do_classifier_free_guidance
        if guided:
            negatives = ([negative_prompt or COSMOS_NEGATIVE_PROMPT] * batch
                         if negative_prompt is None or isinstance(negative_prompt, str)
                         else list(negative_prompt))
            if len(negatives) != batch:
                raise ValueError(f"{len(negatives)} negative prompts for {batch} prompts: give "
                                 "one, or one for each prompt")
            states = np.concatenate([states, self.encode_prompt(negatives,
                                                                max_sequence_length)])
        model = self.transformer
        context = model.encode_text(asarray(states, dtype=model.dtype, device=model.device))
        shape = (batch, int(model.config["in_channels"]), 1, height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        if latents is None:
            latents = make_generator(rng, seed).standard_normal(shape)
        x = np.asarray(latents, np.float32).reshape(shape) * np.float32(SIGMA_MAX)
        sigmas = karras_sigmas(num_inference_steps)
        step = self.step_replay.step(model)  # eager under a memory mode
        for i in range(num_inference_steps):
            sigma = sigmas[i]
            t = sigma / (sigma + np.float32(1))
            rows = np.concatenate([x, x]) if guided else x
            out = step(asarray(rows * (1 - t), dtype=model.dtype, device=model.device),
                       asarray(np.full(len(rows), t, np.float32), device=model.device), context)
            # the denoised estimates: (1 - t) x - t F, the negative's after the prompt's
            denoised = (1 - t) * rows - t * out.numpy().astype(np.float32)
            if guided:
                cond, uncond = denoised[:batch], denoised[batch:]
                denoised = cond + np.float32(guidance_scale) * (cond - uncond)
            x = (x + (sigmas[i + 1] - sigma) * ((x - denoised) / sigma)).astype(np.float32)
            if callback is not None and callback(i + 1, num_inference_steps, x[:, :, 0]) is False:
                break
        if output_type == "latent":
            return x[:, :, 0]
        with lent_steps(self):  # the VAE takes the step capture's scratch (flow_replay)
            return self.decode(x[:, :, 0])


def _transformer_step(transformer: CosmosTransformer3DModel, latents: Tensor, timestep: Tensor,
                      context: Tensor) -> Tensor:
    """The transformer's call of a step (StepReplay's captured function): the scaled latents,
    the timesteps (a float32 Tensor) and the prompts' encoded context, all inputs."""
    return transformer(latents, timestep, context=context)
