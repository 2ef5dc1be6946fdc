"""PRX (Photoroom), as diffusers' PRXPipeline draws it: the prompt cleaned and read by
T5Gemma's encoder (prx_prompt), its states projected once and attended to by every block of
the PRX transformer, which predicts the flow of 2x2 latent patches; classifier-free guidance
with the negative prompt ("" when none) in a second pass; FlowMatchEulerDiscreteScheduler over
its own timesteps at the folder's constant shift; FLUX.1's VAE decodes (a -dc-ae folder's:
Sana's DC-AE). With the torch RNG a
seed gives diffusers' picture at the size asked (diffusers' `use_resolution_binning=False`:
binning draws at the nearest trained aspect ratio and resizes, which the WebUI leaves to the
user's width and height).

    pipe = PRXPipeline.from_pretrained("prx-512-t2i-sft")
    images = pipe("a red circle", height=512, width=512, guidance_scale=4.0, seed=7)
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

from ...loaders.prx import load_prx_folder
from ...loaders.sd.vae_file import load_vae
from ...loaders.vae_kind import require_vae
from ...models import AutoencoderKL
from ...models.dc_ae import AutoencoderDC
from ...models.prx import PRXTransformer2DModel, patches, unpatched
from ...models.prx_prompt import encode
from ...models.step_cache import StepCache
from ...models.t5gemma import T5GemmaEncoder
from ...models.transformer_ops import cast
from ...noise.rng import make_generator
from ...sampling.guidance import combine
from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ...text.llm_tokenizer import LLMTokenizer
from .flow_memory import load_network
from .flow_replay import lent_steps
from .start import StepCallback, check_call, check_sides, run_euler

__all__ = ["PRXPipeline", "prx_schedule"]


def prx_schedule(config: dict[str, Any], steps: int) -> FlowMatchEulerDiscreteScheduler:
    """The schedule PRXPipeline runs: the folder's scheduler over `steps` of its own
    timesteps (linear in unshifted time from 1 to its last training sigma, then shifted).
    diffusers: `scheduler.set_timesteps(steps)`."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    scheduler.set_timesteps(steps)
    scheduler.set_begin_index(0)
    return scheduler


class PRXPipeline:
    """PRX txt2img on gpustd. Components as diffusers names them; `scheduler_config` is the
    folder's `scheduler/scheduler_config.json`, `max_tokens` its tokenizer's
    model_max_length, `sample_size` its default side (model_index.json's
    default_sample_size)."""

    def __init__(self, *, transformer: PRXTransformer2DModel, vae: AutoencoderKL | AutoencoderDC,
                 text_encoder: T5GemmaEncoder, tokenizer: LLMTokenizer,
                 scheduler_config: dict[str, Any], max_tokens: int = 256,
                 sample_size: int = 512, modules: Sequence[str] = ()) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config, self.max_tokens = dict(scheduler_config), int(max_tokens)
        self.modules, self.sample_size = list(modules), int(sample_size)
        self.vae_scale_factor = (vae.spatial_compression_ratio if isinstance(vae, AutoencoderDC)
                                 else 2 ** (len(vae.config["block_out_channels"]) - 1))

    @property
    def dc_ae(self) -> bool:
        """Whether the VAE is a DC-AE (the -dc-ae models') rather than FLUX.1's."""
        return isinstance(self.vae, AutoencoderDC)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> PRXPipeline:
        """Load a PRX diffusers folder (`load_prx_folder`) onto `device` in `dtype`;
        `offload`: each network goes to host memory as soon as it is loaded, for a memory
        mode to bring in as it runs (flow_memory)."""
        weights = load_prx_folder(path, variant=variant)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        assert transformer is not None and text_encoder is not None
        encoder_config = text_encoder.config.get("encoder") or text_encoder.config
        hidden = encoder_config.get("hidden_size")
        wanted = transformer.config.get("context_in_dim", 2304)
        if wanted != hidden:
            raise ValueError(f"the text encoder's states are {hidden} wide, the transformer "
                             f"reads {wanted}: give the folder's own text encoder")
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        encoder = load(lambda: T5GemmaEncoder(text_encoder.config, **place), text_encoder)
        return cls(
            transformer=load(lambda: PRXTransformer2DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: (AutoencoderDC if weights.dc_ae else AutoencoderKL)(
                weights.vae.config, **place), weights.vae),
            text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config, max_tokens=weights.max_tokens,
            sample_size=weights.sample_size)

    def use_vae_file(self, path: str | os.PathLike[str]) -> None:
        """Decode (and encode) with FLUX.1's VAE in the file `path` (`ae.safetensors`), in
        the place, dtype and config of the folder's. WeightsError in one line for another
        family's VAE, or for a DC-AE folder."""
        if self.dc_ae:
            raise ValueError("--vae replaces FLUX.1's VAE; this PRX folder decodes with its "
                             "own DC-AE: drop --vae")
        require_vae(path, "2d", int(self.vae.config["latent_channels"]), model="PRX",
                    usual="FLUX's ae.safetensors")
        weight = self.vae.decoder.conv_in.weight
        self.vae = load_vae(path, dtype=weight.dtype, device=weight.device,
                            config=self.vae.config)

    def encode_prompt(self, prompts: Sequence[str], skip_text_cleaning: bool = False
                      ) -> tuple[Tensor, np.ndarray]:
        """The prompts' states (B, L, hidden) in the transformer's dtype and mask (B, L).
        diffusers: `PRXPipeline.encode_prompt`."""
        states, mask = encode(self.text_encoder, self.tokenizer, prompts,
                              max_tokens=self.max_tokens, skip_text_cleaning=skip_text_cleaning)
        return cast(states, self.transformer.dtype), mask

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 4.0, negative_prompt: str | Sequence[str] = "",
                 skip_text_cleaning: bool = False, cache: StepCache | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], None]:
        """The guided transformer as `flow(x, t)` for `prompts` at height x width: x (B, C,
        h, w) float32 latents, t the scheduler's timestep (0..1000), the flow float32;
        guidance applies when guidance_scale > 1 (`negative_prompt`, "" included, its own
        pass). Also the latents' shape and the schedule's mu (None: a constant shift)."""
        if cache is not None:
            raise ValueError("step caching (First Block Cache, TeaCache, MagCache) is not "
                             "supported for PRX yet; turn it off")
        model = self.transformer
        p = int(model.config["patch_size"])
        scale = self.vae_scale_factor * p
        check_sides(height, width, scale, "PRX")
        h, w = int(height) // self.vae_scale_factor, int(width) // self.vae_scale_factor
        batch, guided = len(prompts), guidance_scale > 1
        texts = [list(prompts)]
        if guided:
            texts.append([negative_prompt] * batch if isinstance(negative_prompt, str)
                         else list(negative_prompt))
        device, tokens = model.txt_in.weight.device, (h // p) * (w // p)
        passes = []
        for text in texts:
            states, mask = self.encode_prompt(text, skip_text_cleaning)
            passes.append((states, model.key_mask(mask, tokens, device),
                           model.rotary(h, w, states.shape[1])))

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            latent = asarray(patches(x, p), dtype=model.dtype, device=device)
            timestep = np.full(batch, np.float32(t) / np.float32(1000), np.float32)
            preds = [model(latent, states, timestep, rotary, mask, size=(h, w)).numpy()
                     .astype(np.float32) for states, mask, rotary in passes]
            out = preds[0] if not guided else combine(preds[1], preds[0], None,
                                                      np.float32(guidance_scale))
            return unpatched(out, p, h, w)

        return flow, (batch, int(self.vae.config["latent_channels"]), h, w), None

    def decode(self, latents: np.ndarray,
               run: Callable[[Any, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Images (B, H, W, 3) in [0, 1] of a DC-AE folder's transformer latents: divided by
        the VAE's scaling factor (plus its config's shift_factor, none for Sana's DC-AE),
        decoded in its dtype; `run(vae, z)`: a memory mode's decode. diffusers: PRXPipeline's
        `vae.decode(latents / scaling_factor + shift_factor)` and postprocess."""
        shift = np.float32(self.vae.config.get("shift_factor") or 0.0)
        z = latents / np.float32(self.vae.scaling_factor) + shift
        with lent_steps(self):
            if run is not None:
                images = run(self.vae, z)
            else:
                weight = self.vae.decoder.conv_in.weight
                images = self.vae.decode(asarray(z, dtype=weight.dtype, device=weight.device)
                                         ).numpy().astype(np.float32)
        return np.clip(images / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | Sequence[str] = "",
                 height: int | None = None, width: int | None = None,
                 num_inference_steps: int = 28,
                 guidance_scale: float = 4.0, skip_text_cleaning: bool = False, seed: int = 0,
                 rng: str = "torch", latents: np.ndarray | None = None, image: Any = None,
                 mask_image: Any = None, strength: float = 0.6,
                 callback: StepCallback | None = None, output_type: str = "np",
                 cache: StepCache | None = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 16, H/8, W/8) ("latent"); height and width
        default to the folder's default_sample_size. `seed` and `rng`
        ("torch", as diffusers; "numpy") draw the starting noise unless `latents` is given;
        `image` (PIL or HxWx3 uint8; with `mask_image`, white = repaint) starts from that
        picture at `strength`, as FLUX's img2img and inpainting do (diffusers has no PRX
        img2img; a DC-AE folder draws from noise only); `callback(done, total, latents)`
        after every step (False stops).
        diffusers: `PRXPipeline(prompt, negative_prompt=, height=, width=,
        num_inference_steps=, guidance_scale=, skip_text_cleaning=,
        use_resolution_binning=False, generator=torch.Generator().manual_seed(seed),
        output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        if guidance_scale < 1:
            raise ValueError(f"guidance_scale must be at least 1 (1: no guidance), got "
                             f"{guidance_scale}")
        height, width = height or self.sample_size, width or self.sample_size
        flow, shape, _ = self.velocity(prompts, height=height, width=width,
                                       guidance_scale=guidance_scale,
                                       negative_prompt=negative_prompt,
                                       skip_text_cleaning=skip_text_cleaning, cache=cache)
        if self.dc_ae and image is not None:
            raise ValueError("a PRX DC-AE folder's own sampler ('diffusers') draws from noise "
                             "only: pick a WebUI sampler (Euler) for img2img")
        scheduler = prx_schedule(self.scheduler_config, num_inference_steps)
        out = run_euler(self.vae, scheduler, shape, flow, generator=make_generator(rng, seed),
                        latents=latents, image=image, mask=mask_image, strength=strength,
                        callback=callback, output_type="latent" if self.dc_ae else output_type,
                        device=self.transformer.txt_in.weight.device,
                        scale_factor=self.vae_scale_factor)
        return self.decode(out) if self.dc_ae and output_type != "latent" else out
