"""LongCat-Image, as diffusers' LongCatImagePipeline draws it: the prompt's tokens (quoted text
a character at a time) padded to 512 inside an image-captioning chat template, Qwen2.5-VL's
last hidden states of those 512 places condition the LongCat-Image transformer (FLUX.1's
blocks), which predicts the flow of packed 2x2 latent patches; classifier-free guidance with
the negative prompt ("" when none) in a second pass, its result rescaled per token to at most
the prompt's prediction's norm ("CFG renorm", on by default); FlowMatchEulerDiscreteScheduler
over sigmas 1 .. 1/n shifted by the number of image tokens; FLUX.1's VAE decodes. With the
torch RNG a seed gives diffusers' picture. The prompt rewrite (`enable_prompt_rewrite`, the
text encoder generating a longer prompt) is not run: pass `enable_prompt_rewrite=False` to
diffusers for the same picture.

    pipe = LongCatImagePipeline.from_pretrained("LongCat-Image")
    images = pipe("a red circle", height=1024, width=1024, guidance_scale=4.5, seed=7)
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

from ...loaders.longcat_image import load_longcat_image_folder
from ...loaders.sd.vae_file import load_vae
from ...loaders.vae_kind import require_vae
from ...models import AutoencoderKL
from ...models.llm import LLMTextModel
from ...models.longcat_image import LongCatImageTransformer2DModel
from ...models.longcat_image_prompt import image_positions, prompt_tokens, text_positions
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.guidance import combine
from ...sampling.model_sampling import calculate_shift
from ...text.llm_tokenizer import LLMTokenizer
from .flow_memory import load_network
from .flow_replay import StepReplay, timestep_step
from .flux import pack_latents, unpack_latents
from .start import StepCallback, check_call, check_sides, flow_schedule, run_euler

__all__ = ["LongCatImagePipeline", "renormed_cfg"]


def renormed_cfg(cond: np.ndarray, uncond: np.ndarray, scale: float, *, renorm: bool = True,
                 renorm_min: float = 0.0) -> np.ndarray:
    """uncond + scale * (cond - uncond), with `renorm` each token's vector (last axis) scaled
    by |cond| / (|guided| + 1e-8) clamped to [renorm_min, 1]. diffusers:
    LongCatImagePipeline's `enable_cfg_renorm` / `cfg_renorm_min`."""
    guided = combine(uncond, cond, None, np.float32(scale))
    if not renorm:
        return guided
    ratio = (np.linalg.norm(cond, axis=-1, keepdims=True)
             / (np.linalg.norm(guided, axis=-1, keepdims=True) + np.float32(1e-8)))
    return (guided * np.clip(ratio, renorm_min, 1.0)).astype(np.float32)


class LongCatImagePipeline:
    """LongCat-Image txt2img on gpustd. Components as diffusers names them;
    `scheduler_config` is the folder's `scheduler/scheduler_config.json`."""

    def __init__(self, *, transformer: LongCatImageTransformer2DModel, vae: AutoencoderKL,
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
                        offload: bool = False) -> LongCatImagePipeline:
        """Load a LongCat-Image diffusers folder (`load_longcat_image_folder`) onto `device`
        in `dtype`; `offload`: each network goes to host memory as soon as it is loaded (the
        text encoder before the transformer loads), for a memory mode to bring in as it runs
        (flow_memory)."""
        weights = load_longcat_image_folder(path, variant=variant)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        assert transformer is not None and text_encoder is not None
        hidden = text_encoder.config["hidden_size"]
        wanted = transformer.config.get("joint_attention_dim", 3584)
        if wanted != hidden:
            raise ValueError(f"the text encoder's states are {hidden} wide, the transformer "
                             f"reads {wanted}: LongCat-Image reads Qwen2.5-VL-7B's (3584); "
                             "give the folder's own text encoder")
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        # the text encoder first: with `offload` it has left the GPU when the transformer loads
        encoder = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        return cls(
            transformer=load(lambda: LongCatImageTransformer2DModel(transformer.config,
                                                                    **place), transformer),
            vae=load(lambda: AutoencoderKL(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config)

    def use_vae_file(self, path: str | os.PathLike[str]) -> None:
        """Decode (and encode) with FLUX.1's VAE in the file `path` (`ae.safetensors`, Black
        Forest Labs' names or diffusers'), in the place, dtype and config of the folder's.
        WeightsError in one line for another family's VAE."""
        require_vae(path, "2d", int(self.vae.config["latent_channels"]), model="LongCat-Image",
                    usual="FLUX's ae.safetensors")
        weight = self.vae.decoder.conv_in.weight
        self.vae = load_vae(path, dtype=weight.dtype, device=weight.device,
                            config=self.vae.config)

    def encode_prompt(self, prompts: Sequence[str]) -> Tensor:
        """The prompts' states (B, 512, hidden) in the transformer's dtype: Qwen2.5-VL's last
        hidden states of the templated tokens (`prompt_tokens`), the template's places
        dropped, the padding's kept. diffusers: `LongCatImagePipeline.encode_prompt`."""
        ids, mask, kept = prompt_tokens(self.tokenizer, prompts)
        states = self.text_encoder.hidden_states(ids, mask, layer=-1)
        states = take_slice(states, kept.start, kept.stop, axis=1)
        return states.astype(self.transformer.x_embedder.weight.dtype)

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 4.5, negative_prompt: str | Sequence[str] = "",
                 enable_cfg_renorm: bool = True, cfg_renorm_min: float = 0.0,
                 cache: StepCache | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """The guided transformer as `flow(x, t)` for `prompts` at height x width: x (B, C,
        h, w) float32 latents, t the scheduler's timestep (0..1000), the flow back unpacked
        (float32); guidance applies when guidance_scale > 1 (`negative_prompt`, "" included,
        its own pass; CFG renorm as `renormed_cfg`). Also the latents' shape and the
        schedule's `mu`. `cache`: the generation's step cache, of which each pass takes a
        branch (diffusers' "cond" and "uncond" contexts)."""
        scale = self.vae_scale_factor * 2
        if height < scale or width < scale:
            raise ValueError(f"height and width must be at least {scale}, got {height}x{width}")
        if not 0.0 <= cfg_renorm_min <= 1.0:
            raise ValueError(f"cfg_renorm_min must be in [0, 1], got {cfg_renorm_min}")
        weight = self.transformer.x_embedder.weight
        batch, guided = len(prompts), guidance_scale > 1
        h, w = 2 * (int(height) // scale), 2 * (int(width) // scale)
        rotary = self.transformer.rotary(text_positions(), image_positions(h // 2, w // 2))
        passes = [self.encode_prompt(prompts)]
        if guided:
            negatives = ([negative_prompt] * batch if isinstance(negative_prompt, str)
                         else list(negative_prompt))
            passes.append(self.encode_prompt(negatives))
        branches = [None if cache is None else cache.branch() for _ in passes]
        # replayed unless a step cache decides on the host (flow_replay)
        step = self.step_replay.step(self.transformer) if cache is None else None

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            packed = asarray(pack_latents(x), dtype=weight.dtype, device=weight.device)
            timestep = np.full(batch, np.float32(t) / np.float32(1000), np.float32)
            preds = [self.predict(step, packed, states, timestep, rotary, branch)
                     for states, branch in zip(passes, branches)]
            out = preds[0] if not guided else renormed_cfg(
                preds[0], preds[1], guidance_scale, renorm=enable_cfg_renorm,
                renorm_min=cfg_renorm_min)
            return unpack_latents(out, h, w)

        mu = calculate_shift((h // 2) * (w // 2), self.scheduler_config)
        return flow, (batch, self.transformer.config["in_channels"] // 4, h, w), mu

    def predict(self, step: Callable[..., Tensor] | None, packed: Tensor, states: Tensor,
                timestep: np.ndarray, rotary: tuple[Tensor, Tensor], branch: Any
                ) -> np.ndarray:
        """One pass's flow (float32): the replayed `step` (the timestep uploaded as a float32
        Tensor), or the transformer run eagerly through the step cache's `branch`."""
        if step is not None:
            out = step(packed, states, asarray(timestep, device=packed.device), rotary)
        else:
            out = self.transformer(packed, states, timestep, rotary=rotary, cache=branch)
        return out.numpy().astype(np.float32)

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | Sequence[str] = "",
                 height: int = 1024, width: int = 1024, num_inference_steps: int = 50,
                 guidance_scale: float = 4.5, enable_cfg_renorm: bool = True,
                 cfg_renorm_min: float = 0.0, seed: int = 0, rng: str = "torch",
                 latents: np.ndarray | None = None, image: Any = None, mask_image: Any = None,
                 strength: float = 0.6, callback: StepCallback | None = None,
                 output_type: str = "np", cache: StepCache | None = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 16, H/8, W/8) ("latent"). Guidance and renorm as
        `velocity`. `seed` and `rng` ("torch", as diffusers; "numpy") draw the starting noise
        unless `latents` is given; `image` (PIL or HxWx3 uint8; with `mask_image`, white =
        repaint) starts from that picture at `strength`, as FLUX's img2img and inpainting do
        (diffusers has no LongCat-Image img2img); `callback(done, total, latents)` after
        every step (False stops); `cache`: step caching. diffusers:
        `LongCatImagePipeline(prompt, negative_prompt=, height=, width=,
        num_inference_steps=, guidance_scale=, enable_cfg_renorm=, cfg_renorm_min=,
        enable_prompt_rewrite=False, generator=torch.Generator().manual_seed(seed),
        output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        check_sides(height, width, self.vae_scale_factor * 2, "LongCat-Image")
        # 1. conditioning, as a function of the latents and the timestep
        flow, shape, mu = self.velocity(prompts, height=height, width=width,
                                        guidance_scale=guidance_scale,
                                        negative_prompt=negative_prompt,
                                        enable_cfg_renorm=enable_cfg_renorm,
                                        cfg_renorm_min=cfg_renorm_min, cache=cache)
        # 2. the schedule: sigmas 1 .. 1/n, shifted by the number of image tokens
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu)
        # 3. the start, Euler steps along the flow, the pictures out of the latent space
        return run_euler(self.vae, scheduler, shape, flow, generator=make_generator(rng, seed),
                         latents=latents, image=image, mask=mask_image, strength=strength,
                         callback=callback, output_type=output_type,
                         device=self.transformer.x_embedder.weight.device, lender=self)
