"""NVIDIA Cosmos Predict2.5 (text, image or video to world), as diffusers'
Cosmos2_5_PredictBasePipeline draws it: Qwen2.5-VL (Cosmos-Reason1) reads the prompt in its
chat (a fixed system message, 512 tokens padded, no attention mask), the output of every
layer normalised over its features (mean 0, standard deviation 1) and all of them side by
side condition the Cosmos transformer (its crossattn_proj takes them to the blocks' width);
UniPC on the folder's flow sigmas steps the latent video; a conditioning picture (image2world)
or the last frames of a video (video2world) are encoded by Wan's VAE, held in place in their
latent frames (the condition-mask channel set, their own timestep 0.0001, their velocity the
one that keeps them), and the rest drawn around them. CFG as diffusers: `cond + g (cond -
uncond)` where g > 1, Cosmos' default negative prompt where none is given. With the torch RNG
a seed gives diffusers' video. Diffusers' safety checker (cosmos_guardrail, a separate
download) is not run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import asarray

from ...loaders.cosmos import load_cosmos25_folder
from ...models.cosmos import CosmosTransformer3DModel
from ...models.llm import LLMTextModel
from ...models.wan_vae import AutoencoderKLWan
from ...noise.rng import make_generator
from ...sampling.schedulers.unipc_flow import FlowUniPCMultistepScheduler
from ...text.llm_tokenizer import LLMTokenizer
from ..finite import check_decoded
from ..flow.cosmos import COSMOS_NEGATIVE_PROMPT
from ..flow.flow_memory import load_network
from ..observer import StepCallback

__all__ = ["COSMOS25_SYSTEM", "VIDEO2WORLD_FRAMES", "Cosmos25PredictPipeline", "continued_frames",
           "cosmos25_chat", "layer_stack"]

VIDEO2WORLD_FRAMES = 5  # diffusers' num_latent_conditional_frames=2: 1 + 4 frames
COSMOS25_SYSTEM = "You are a helpful assistant who will provide prompts to an image generator."


def cosmos25_chat(prompt: str) -> str:
    """The chat the pipeline gives Qwen2.5-VL: its system message and the prompt, no
    generation prompt. transformers: `apply_chat_template([system, user],
    add_generation_prompt=False)` of Qwen2.5-VL's template."""
    return (f"<|im_start|>system\n{COSMOS25_SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{prompt}<|im_end|>\n")


def continued_frames(video: Sequence[Any], width: int, height: int,
                     kept: int = VIDEO2WORLD_FRAMES) -> np.ndarray:
    """Video2world's `frames`: the last `kept` frames of `video` (PIL images), each resized
    to width x height (bilinear, as the pipeline's video processor), as (1, kept, height,
    width, 3) in [0, 1]. diffusers: `video_processor.preprocess_video(video, height,
    width)[:, :, -kept:]` in `Cosmos2_5_PredictBasePipeline.__call__`."""
    from PIL import Image

    frames = [f.resize((width, height), Image.Resampling.BILINEAR) for f in video[-kept:]]
    return np.stack([np.asarray(f.convert("RGB"), np.float32) / 255 for f in frames])[None]


def layer_stack(states: Sequence[np.ndarray]) -> np.ndarray:
    """Each layer's states (B, L, D) normalised over D ((x - mean) / (unbiased std + 1e-8)),
    concatenated along D. diffusers: the loop over `hidden_states[1:]` of
    `Cosmos2_5_PredictBasePipeline._get_prompt_embeds`."""
    out = []
    for layer in states:
        x = np.asarray(layer, np.float64)
        std = x.std(axis=-1, ddof=1, keepdims=True)
        out.append(((x - x.mean(axis=-1, keepdims=True)) / (std + 1e-8)).astype(np.float32))
    return np.concatenate(out, axis=-1)


class Cosmos25PredictPipeline:
    """Cosmos Predict2.5 on gpustd. Components as diffusers names them (text_encoder: the
    language model of Qwen2.5-VL); `scheduler_config` the folder's UniPC on flow sigmas."""

    def __init__(self, *, transformer: CosmosTransformer3DModel, vae: AutoencoderKLWan,
                 text_encoder: LLMTextModel, tokenizer: LLMTokenizer,
                 scheduler_config: dict[str, Any]) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.memory_mode = None  # no memory modes yet (what the CLI's report reads)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None
                        ) -> Cosmos25PredictPipeline:
        """Load a Cosmos Predict2.5 diffusers folder (`load_cosmos25_folder`) onto `device`
        in `dtype`."""
        weights = load_cosmos25_folder(path, variant=variant)
        transformer, text = weights.transformer, weights.text_encoder
        assert transformer is not None and text is not None
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=False)
        return cls(
            text_encoder=load(lambda: LLMTextModel(text.config, **place), text),
            transformer=load(lambda: CosmosTransformer3DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKLWan(weights.vae.config, **place), weights.vae),
            tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config)

    def prompt_states(self, prompts: Sequence[str], max_sequence_length: int = 512
                      ) -> np.ndarray:
        """(B, max_sequence_length, layers x hidden) float32: `layer_stack` of every
        Qwen2.5-VL layer's output (the last final-normed) for each prompt's chat, padded as
        the tokenizer pads and read without a mask, as diffusers does."""
        ids, mask = self.tokenizer([cosmos25_chat(p) for p in prompts], max_sequence_length)
        layers = tuple(range(1, len(self.text_encoder.layers) + 1))
        states = self.text_encoder.hidden_states_of(ids, np.ones_like(mask), layers)
        return layer_stack([s.numpy() for s in states])

    def condition_latents(self, frames: np.ndarray) -> np.ndarray:
        """Pixel frames (B, T, H, W, 3) in [0, 1] -> their normalised VAE latents (the
        posterior's mean). diffusers: `retrieve_latents(vae.encode(video), sample_mode=
        "argmax")`, then `(z - latents_mean) * (1 / latents_std)`."""
        vae = self.vae
        pixels = np.ascontiguousarray(frames.transpose(0, 4, 1, 2, 3)) * 2 - 1
        mean, _ = vae.encode(asarray(pixels.astype(np.float32),
                                     dtype=vae.post_quant_conv.weight.dtype, device=vae.device))
        return vae.normalize(mean).numpy().astype(np.float32)  # type: ignore[no-any-return]

    def decode(self, latents: np.ndarray, num_frames: int) -> np.ndarray:
        """Videos (B, num_frames, H, W, 3) in [0, 1] from the latent video (diffusers'
        `_match_num_frames` where the VAE gives another count)."""
        vae = self.vae
        z = vae.denormalize(asarray(latents, dtype=vae.post_quant_conv.weight.dtype,
                                    device=vae.device))
        video = vae.decode(z).numpy().astype(np.float32)
        check_decoded(video, vae)
        if video.shape[2] != num_frames:
            video = np.repeat(video, vae.temporal_factor, axis=2)
            pad = max(0, num_frames - video.shape[2])
            video = np.concatenate([video] + [video[:, :, -1:]] * pad, axis=2)[:, :, :num_frames]
        return np.clip(video / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 4, 1)  # type: ignore[no-any-return]

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | None = None,
                 frames: np.ndarray | None = None, height: int = 704, width: int = 1280,
                 num_frames: int = 93, num_inference_steps: int = 36,
                 guidance_scale: float = 7.0, seed: int = 0, rng: str = "torch",
                 conditional_frame_timestep: float = 0.0001, max_sequence_length: int = 512,
                 callback: StepCallback | None = None, output_type: str = "np") -> np.ndarray:
        """Videos (B, num_frames, height, width, 3) in [0, 1] ("np") or the latent video
        ("latent"). `frames` (B, T, height, width, 3) in [0, 1]: the conditioning pixels, 1
        (image2world) or 1 + 4k (video2world: the video's last ones) frames whose 1 + k
        latent frames are kept; None: text2world. `callback(done, total, latents)` after
        every step (False stops). diffusers:
        `Cosmos2_5_PredictBasePipeline(image= / video=, prompt=, ...).frames`."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        batch, factor = len(prompts), self.vae.spatial_factor
        if height % (2 * factor) or width % (2 * factor) or (num_frames - 1) % 4:
            raise ValueError(f"Cosmos Predict2.5 draws sides in multiples of {2 * factor} and "
                             f"1 + 4k frames, got {width}x{height}, {num_frames} frames")
        states = self.prompt_states(prompts, max_sequence_length)
        guided = guidance_scale > 1
        if guided:
            negatives = [negative_prompt or COSMOS_NEGATIVE_PROMPT] * batch
            states = np.concatenate([states, self.prompt_states(negatives,
                                                                max_sequence_length)])
        model = self.transformer
        context = model.encode_text(asarray(states, dtype=model.dtype, device=model.device))
        shape = (batch, int(model.config["in_channels"]) - 1, (num_frames - 1) // 4 + 1,
                 height // factor, width // factor)
        latents = make_generator(rng, seed).standard_normal(shape).astype(np.float32)
        kept = 0 if frames is None else (frames.shape[1] - 1) // 4 + 1
        if frames is not None and ((frames.shape[1] - 1) % 4 or kept > shape[2]):
            raise ValueError(f"Cosmos Predict2.5 keeps 1 or 1 + 4k conditioning frames, at most "
                             f"num_frames ({num_frames}); got {frames.shape[1]}")
        cond = np.zeros(shape, np.float32)
        if frames is not None:
            cond[:, :, :kept] = self.condition_latents(frames)[:, :, :kept]
        mask = np.zeros((batch, 1, shape[2], shape[3], shape[4]), np.float32)
        mask[:, :, :kept] = 1
        keep_velocity = (latents - cond) * mask  # noise - data: the velocity that keeps them
        scheduler = FlowUniPCMultistepScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(num_inference_steps)
        rows = 2 if guided else 1
        mask_gpu = asarray(np.concatenate([mask] * rows), dtype=model.dtype, device=model.device)
        for i, t in enumerate(scheduler.timesteps):
            sigma = np.float32(scheduler.sigmas[i])
            steps = np.full((batch * rows, shape[2]), sigma, np.float32)
            if conditional_frame_timestep >= 0:
                steps[:, :kept] = np.float32(conditional_frame_timestep)
            x = mask * cond + (1 - mask) * latents
            out = model(asarray(np.concatenate([x] * rows), dtype=model.dtype,
                                device=model.device),
                        steps if kept else steps[:, 0], context=context,
                        condition_mask=mask_gpu).numpy().astype(np.float32)
            velocity = keep_velocity + out[:batch] * (1 - mask)
            if guided:
                negative = keep_velocity + out[batch:] * (1 - mask)
                velocity = velocity + np.float32(guidance_scale) * (velocity - negative)
            latents = np.asarray(scheduler.step(velocity, int(t), latents), np.float32)
            if callback is not None and callback(i + 1, num_inference_steps, latents) is False:
                break
        return latents if output_type == "latent" else self.decode(latents, num_frames)
