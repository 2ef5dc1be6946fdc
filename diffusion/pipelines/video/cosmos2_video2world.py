"""NVIDIA Cosmos Predict2 Video2World, as diffusers' Cosmos2VideoToWorldPipeline draws it: T5
reads the prompt as for Predict2 Text2Image (pipelines.flow.cosmos), a picture or a video is
encoded by Wan's VAE (a sample of its posterior, drawn from the seed's generator before the
noise, as diffusers' `retrieve_latents` does) and its latent frames are held: the
condition-mask channel marks them, they take their own timestep (sigma_conditioning 0.0001 as
t = s / (s + 1)) and their denoised estimate is themselves. The other frames are drawn by
Text2Image's EDM Euler over Karras sigmas (80 to 0.002), the frame rate scaling the
transformer's frame positions. CFG as diffusers: `cond + g (cond - uncond)` on the denoised
estimates where g > 1, Cosmos' default negative prompt where none is given. With the torch RNG
a seed gives diffusers' latents. Its safety checker (cosmos_guardrail) is not run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import asarray

from ...loaders.cosmos import load_cosmos_folder
from ...models.cosmos import CosmosTransformer3DModel
from ...models.t5 import T5EncoderModel
from ...models.wan_vae import AutoencoderKLWan
from ...noise.rng import make_generator
from ...text.t5_tokenizer import T5Tokenizer
from ..finite import check_decoded
from ..flow.cosmos import COSMOS_NEGATIVE_PROMPT, SIGMA_DATA, SIGMA_MAX, karras_sigmas
from ..flow.flow_memory import load_network
from ..observer import StepCallback

__all__ = ["Cosmos2VideoToWorldPipeline", "held_frames"]


def held_frames(pictures: Sequence[Any], width: int, height: int) -> np.ndarray:
    """The pipeline's `frames` from a picture or a video's frames (PIL images): each resized
    Lanczos to width x height, as (1, T, height, width, 3) in [0, 1]. diffusers: the video
    processor's `preprocess` / `preprocess_video` of `image=` / `video=`."""
    from PIL import Image

    return np.stack([np.asarray(p.convert("RGB").resize(
        (width, height), Image.Resampling.LANCZOS), np.float32) / 255 for p in pictures])[None]


class Cosmos2VideoToWorldPipeline:
    """Cosmos Predict2 Video2World on gpustd. Components as diffusers names them."""

    def __init__(self, *, transformer: CosmosTransformer3DModel, vae: AutoencoderKLWan,
                 text_encoder: T5EncoderModel, tokenizer: T5Tokenizer) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.memory_mode = None  # no memory modes yet (what the CLI's report reads)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None
                        ) -> Cosmos2VideoToWorldPipeline:
        """Load a Cosmos Predict2 Video2World diffusers folder onto `device` in `dtype`."""
        weights = load_cosmos_folder(path, variant=variant,
                                     pipeline="Cosmos2VideoToWorldPipeline")
        transformer, t5 = weights.transformer, weights.text_encoder
        assert transformer is not None and t5 is not None
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=False)
        return cls(
            text_encoder=load(lambda: T5EncoderModel(t5.config, **place), t5),
            transformer=load(lambda: CosmosTransformer3DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKLWan(weights.vae.config, **place), weights.vae),
            tokenizer=T5Tokenizer(weights.tokenizer_dir))

    def encode_prompt(self, prompts: Sequence[str], max_sequence_length: int = 512
                      ) -> np.ndarray:
        """T5's last hidden states, zeros after each prompt's tokens. diffusers:
        `_get_t5_prompt_embeds`."""
        ids, mask = self.tokenizer.encode(list(prompts), max_sequence_length)
        states = self.text_encoder(ids, mask).numpy().astype(np.float32)
        return states * (mask[:, :, None] != 0)  # type: ignore[no-any-return]

    def condition_latents(self, frames: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Pixel frames (1, 1 + 4k, H, W, 3) in [0, 1] -> a sample of their posterior (mean
        + std x `noise`, noise's first 1 + k latent frames), normalised. diffusers:
        `retrieve_latents(vae.encode(video), generator)`, then `(z - mean) / std`."""
        vae = self.vae
        pixels = np.ascontiguousarray(frames.transpose(0, 4, 1, 2, 3)) * 2 - 1
        mean, logvar = (t.numpy().astype(np.float32) for t in vae.encode(asarray(
            pixels.astype(np.float32), dtype=vae.post_quant_conv.weight.dtype,
            device=vae.device)))
        std = np.exp(0.5 * np.clip(logvar, -30.0, 20.0))
        sample = mean + std * noise[:, :, :mean.shape[2]]
        z = vae.normalize(asarray(sample, dtype=vae.post_quant_conv.weight.dtype,
                                  device=vae.device))
        return z.numpy().astype(np.float32) * np.float32(SIGMA_DATA)  # type: ignore[no-any-return]

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Videos (B, frames, H, W, 3) in [0, 1] from the latent video."""
        vae = self.vae
        z = vae.denormalize(asarray(latents / np.float32(SIGMA_DATA),
                                    dtype=vae.post_quant_conv.weight.dtype, device=vae.device))
        video = vae.decode(z).numpy().astype(np.float32)
        check_decoded(video, vae)
        return np.clip(video / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 4, 1)  # type: ignore[no-any-return]

    def __call__(self, prompt: str | Sequence[str], frames: np.ndarray, *,
                 negative_prompt: str | None = None, height: int = 704, width: int = 1280,
                 num_frames: int = 93, num_inference_steps: int = 35,
                 guidance_scale: float = 7.0, fps: float = 16, seed: int = 0,
                 rng: str = "torch", sigma_conditioning: float = 0.0001,
                 max_sequence_length: int = 512, callback: StepCallback | None = None,
                 output_type: str = "np") -> np.ndarray:
        """Videos (B, num_frames, height, width, 3) in [0, 1] ("np") or the latent video
        ("latent"). `frames` (1, T, height, width, 3) in [0, 1]: a picture (T 1) or a video
        (its last num_frames where longer) whose (T - 1) // 4 + 1 latent frames are held.
        diffusers: `Cosmos2VideoToWorldPipeline(image= / video=, prompt=, ...).frames`."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        batch, factor = len(prompts), self.vae.spatial_factor
        if height % (2 * factor) or width % (2 * factor) or (num_frames - 1) % 4:
            raise ValueError(f"Cosmos Predict2 draws sides in multiples of {2 * factor} and "
                             f"1 + 4k frames, got {width}x{height}, {num_frames} frames")
        frames = frames[:, -num_frames:]
        kept = (frames.shape[1] - 1) // 4 + 1
        states = self.encode_prompt(prompts, max_sequence_length)
        guided = guidance_scale > 1
        if guided:
            negatives = [negative_prompt or COSMOS_NEGATIVE_PROMPT] * batch
            states = np.concatenate([states, self.encode_prompt(negatives,
                                                                max_sequence_length)])
        model = self.transformer
        context = model.encode_text(asarray(states, dtype=model.dtype, device=model.device))
        shape = (batch, int(model.config["in_channels"]) - 1, (num_frames - 1) // 4 + 1,
                 height // factor, width // factor)
        generator = make_generator(rng, seed)
        posterior = generator.standard_normal((1, *shape[1:])).astype(np.float32)
        cond = self.condition_latents(frames[:, :4 * (kept - 1) + 1], posterior)
        latents = generator.standard_normal(shape).astype(np.float32) * np.float32(SIGMA_MAX)
        held = np.zeros((1, 1, shape[2], 1, 1), np.float32)
        held[:, :, :kept] = 1
        cond = np.concatenate([cond, np.zeros((1, shape[1], shape[2] - kept, *shape[3:]),
                                              np.float32)], axis=2)
        rows = 2 if guided else 1
        mask = asarray(np.broadcast_to(held, (batch * rows, 1, *shape[2:])).copy(),
                       dtype=model.dtype, device=model.device)
        t_cond = np.float32(sigma_conditioning / (sigma_conditioning + 1))
        sigmas = karras_sigmas(num_inference_steps)
        for i in range(num_inference_steps):
            sigma = sigmas[i]
            t = sigma / (sigma + np.float32(1))
            x = held * cond + (1 - held) * latents * (1 - t)
            steps = np.where(held[0, 0, :, 0, 0] > 0, t_cond, t).astype(np.float32)
            out = model(asarray(np.concatenate([x] * rows), dtype=model.dtype,
                                device=model.device),
                        np.broadcast_to(steps, (batch * rows, shape[2])).copy(),
                        context=context, fps=fps, condition_mask=mask)
            denoised = (1 - t) * np.concatenate([latents] * rows) \
                - t * out.numpy().astype(np.float32)
            denoised = held * cond + (1 - held) * denoised
            if guided:
                positive, negative = denoised[:batch], denoised[batch:]
                denoised = positive + np.float32(guidance_scale) * (positive - negative)
            latents = (latents + (sigmas[i + 1] - sigma) * ((latents - denoised) / sigma)
                       ).astype(np.float32)
            if callback is not None and callback(i + 1, num_inference_steps, latents) is False:
                break
        return latents if output_type == "latent" else self.decode(latents)
