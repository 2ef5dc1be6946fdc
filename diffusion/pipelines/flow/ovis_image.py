"""Ovis-Image, as diffusers' OvisImagePipeline draws it: the prompt after a captioning
instruction in Qwen3's chat template, cut or padded to 256 + 28 tokens; Qwen3's last hidden
states (the padding's zeroed, the first 28 places dropped) condition the Ovis-Image
transformer (FLUX.1's blocks with SwiGLU MLPs), which predicts the flow of packed 2x2 latent
patches; classifier-free guidance with the negative prompt ("" when none) in a second pass
(`uncond + scale * (cond - uncond)`); FlowMatchEulerDiscreteScheduler over sigmas 1 .. 1/n
shifted by the number of image tokens; FLUX.1's VAE decodes. With the torch RNG a seed gives
diffusers' picture.

    pipe = OvisImagePipeline.from_pretrained("Ovis-Image-7B")
    images = pipe("a sign that says OPEN", height=1024, width=1024, guidance_scale=5.0, seed=7)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray, take_slice

from ...loaders.ovis_image import load_ovis_image_folder
from ...loaders.sd.vae_file import load_vae
from ...loaders.vae_kind import require_vae
from ...models import AutoencoderKL
from ...models.llm import LLMTextModel
from ...models.longcat_image_prompt import text_positions
from ...models.ovis_image import OvisImageTransformer2DModel
from ...models.ovis_image_prompt import DROPPED_TOKENS, TEXT_TOKENS, prompt_tokens
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.guidance import combine
from ...sampling.model_sampling import calculate_shift
from ...text.llm_tokenizer import LLMTokenizer
from .flow_memory import load_network
from .flow_replay import StepReplay, timestep_step
from .flux import image_ids, pack_latents, unpack_latents
from .start import StepCallback, check_call, check_sides, flow_schedule, run_euler

__all__ = ["OvisImagePipeline"]


class OvisImagePipeline:
    """Ovis-Image txt2img on gpustd. Components as diffusers names them; `scheduler_config`
    is the folder's `scheduler/scheduler_config.json`."""

    def __init__(self, *, transformer: OvisImageTransformer2DModel, vae: AutoencoderKL,
                 text_encoder: LLMTextModel, tokenizer: LLMTokenizer,
                 scheduler_config: dict[str, Any], modules: Sequence[str] = ()) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.modules = list(modules)
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        # the transformer's step, replayed in the plain memory mode (flow_replay)
        self.step_replay = StepReplay(timestep_step)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> OvisImagePipeline:
        """Load an Ovis-Image diffusers folder (`load_ovis_image_folder`) onto `device` in
        `dtype`; `offload`: each network goes to host memory as soon as it is loaded (the
        text encoder before the transformer loads), for a memory mode to bring in as it runs
        (flow_memory)."""
        weights = load_ovis_image_folder(path, variant=variant)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        assert transformer is not None and text_encoder is not None
        hidden = text_encoder.config["hidden_size"]
        wanted = transformer.config.get("joint_attention_dim", 2048)
        if wanted != hidden:
            raise ValueError(f"the text encoder's states are {hidden} wide, the transformer "
                             f"reads {wanted}: give the Ovis-Image folder's own text encoder")
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        # the text encoder first: with `offload` it has left the GPU when the transformer loads
        encoder = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        return cls(
            transformer=load(lambda: OvisImageTransformer2DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKL(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config)

    def use_vae_file(self, path: str | os.PathLike[str]) -> None:
        """Decode (and encode) with FLUX.1's VAE in the file `path` (`ae.safetensors`, Black
        Forest Labs' names or diffusers'), in the place, dtype and config of the folder's.
        WeightsError in one line for another family's VAE."""
        require_vae(path, "2d", int(self.vae.config["latent_channels"]), model="Ovis-Image",
                    usual="FLUX's ae.safetensors")
        weight = self.vae.decoder.conv_in.weight
        self.vae = load_vae(path, dtype=weight.dtype, device=weight.device,
                            config=self.vae.config)

    def encode_prompt(self, prompts: Sequence[str]) -> Tensor:
        """The prompts' states (B, 256, hidden) in the transformer's dtype: Qwen3's last
        hidden states of the templated tokens (`prompt_tokens`), the padding's zeroed, the
        first 28 places dropped. diffusers: `OvisImagePipeline._get_ovis_prompt_embeds`."""
        ids, mask = prompt_tokens(self.tokenizer, prompts)
        states = self.text_encoder.hidden_states(ids, mask, layer=-1)
        states = states * asarray(mask[..., None].astype(np.float32), device=states.device)
        states = take_slice(states, DROPPED_TOKENS, DROPPED_TOKENS + TEXT_TOKENS, axis=1)
        return states.astype(self.transformer.x_embedder.weight.dtype)

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 5.0, negative_prompt: str | Sequence[str] = "",
                 cache: StepCache | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """The guided transformer as `flow(x, t)` for `prompts` at height x width: x (B, C,
        h, w) float32 latents, t the scheduler's timestep (0..1000), the flow back unpacked
        (float32); guidance applies when guidance_scale > 1 (`negative_prompt`, "" included,
        its own pass). Also the latents' shape and the schedule's `mu`. `cache`: the
        generation's step cache, of which each pass takes a branch (diffusers' "cond" and
        "uncond" contexts)."""
        scale = self.vae_scale_factor * 2
        if height < scale or width < scale:
            raise ValueError(f"height and width must be at least {scale}, got {height}x{width}")
        weight = self.transformer.x_embedder.weight
        batch, guided = len(prompts), guidance_scale > 1
        h, w = 2 * (int(height) // scale), 2 * (int(width) // scale)
        rotary = self.transformer.rotary(text_positions(TEXT_TOKENS), image_ids(h // 2, w // 2))
        passes = [self.encode_prompt(prompts)]
        if guided:
            negatives = ([negative_prompt] * batch if isinstance(negative_prompt, str)
                         else list(negative_prompt))
            if len(negatives) != batch:
                raise ValueError(f"{len(negatives)} negative prompts for {batch} prompts: "
                                 "give one, or one for each prompt")
            passes.append(self.encode_prompt(negatives))
        branches = [None if cache is None else cache.branch() for _ in passes]
        # replayed unless a step cache decides on the host; both passes one recording (the
        # prompts' states are always 256 tokens)
        step = self.step_replay.step(self.transformer) if cache is None else None

        def predict(packed: Tensor, timestep: np.ndarray, states: Tensor,
                    branch: Any) -> np.ndarray:
            if step is not None:
                out = step(packed, states, asarray(timestep, device=weight.device), rotary)
            else:
                out = self.transformer(packed, states, timestep, rotary=rotary, cache=branch)
            return out.numpy().astype(np.float32)

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            packed = asarray(pack_latents(x), dtype=weight.dtype, device=weight.device)
            timestep = np.full(batch, np.float32(t) / np.float32(1000), np.float32)
            preds = [predict(packed, timestep, states, branch)
                     for states, branch in zip(passes, branches)]
            out = preds[0] if not guided else combine(preds[1], preds[0], None,
                                                      np.float32(guidance_scale))
            return unpack_latents(out, h, w)

        mu = calculate_shift((h // 2) * (w // 2), self.scheduler_config)
        return flow, (batch, self.transformer.config["in_channels"] // 4, h, w), mu

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | Sequence[str] = "",
                 height: int = 1024, width: int = 1024, num_inference_steps: int = 50,
                 guidance_scale: float = 5.0, seed: int = 0, rng: str = "torch",
                 latents: np.ndarray | None = None, image: Any = None, mask_image: Any = None,
                 strength: float = 0.6, callback: StepCallback | None = None,
                 output_type: str = "np", cache: StepCache | None = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 16, H/8, W/8) ("latent"). Guidance as
        `velocity`. `seed` and `rng` ("torch", as diffusers; "numpy") draw the starting noise
        unless `latents` is given; `image` (PIL or HxWx3 uint8; with `mask_image`, white =
        repaint) starts from that picture at `strength`, as FLUX's img2img and inpainting do
        (diffusers has no Ovis-Image img2img); `callback(done, total, latents)` after every
        step (False stops); `cache`: step caching. diffusers: `OvisImagePipeline(prompt,
        negative_prompt=, height=, width=, num_inference_steps=, guidance_scale=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        check_sides(height, width, self.vae_scale_factor * 2, "Ovis-Image")
        # 1. conditioning, as a function of the latents and the timestep
        flow, shape, mu = self.velocity(prompts, height=height, width=width,
                                        guidance_scale=guidance_scale,
                                        negative_prompt=negative_prompt, cache=cache)
        # 2. the schedule: sigmas 1 .. 1/n, shifted by the number of image tokens
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu)
        # 3. the start, Euler steps along the flow, the pictures out of the latent space
        return run_euler(self.vae, scheduler, shape, flow, generator=make_generator(rng, seed),
                         latents=latents, image=image, mask=mask_image, strength=strength,
                         callback=callback, output_type=output_type,
                         device=self.transformer.x_embedder.weight.device, lender=self)

