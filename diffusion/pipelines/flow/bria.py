"""Bria 3.2, as diffusers' BriaPipeline draws it: T5-XXL reads each prompt's own tokens (no
padding, no mask: up to 127 and </s>), its states zero-padded to 128 condition the Bria
transformer (FLUX.1's blocks, no pooled text), which predicts the flow of packed 2x2 latent
patches from the scheduler's timestep; classifier-free guidance in a second pass whose text is
the negative prompt's states, or all zeros where it is empty; FlowMatchEulerDiscreteScheduler
over the training sigmas shifted by the config's constant (or, with its dynamic shifting,
over sigmas 1 .. 1/n shifted by the number of image tokens, as FLUX); the folder's VAE
decodes. With the torch RNG a seed gives diffusers' picture.

    pipe = BriaPipeline.from_pretrained("BRIA-3.2")
    images = pipe("a red circle", height=1024, width=1024, guidance_scale=5, seed=7)
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

from ...loaders.bria import load_bria_folder
from ...loaders.sd.vae_file import load_vae
from ...loaders.vae_kind import require_vae
from ...models import AutoencoderKL, T5EncoderModel
from ...models.bria import BriaTransformer2DModel
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.guidance import combine
from ...sampling.model_sampling import calculate_shift
from ...text.flow_emphasis import emphasize, t5_ids
from ...text.t5_tokenizer import T5Tokenizer
from .flow_memory import load_network
from .flow_replay import StepReplay, timestep_step
from .flux import image_ids, pack_latents, unpack_latents
from .start import StepCallback, check_call, check_sides, flow_schedule, run_euler

__all__ = ["BriaPipeline", "training_sigmas"]


def training_sigmas(steps: int, num_train_timesteps: int = 1000) -> np.ndarray:
    """`steps` of the training sigmas T/T .. 1/T, evenly spaced by index (float32), before
    the scheduler's shift. diffusers: `pipeline_bria.get_original_sigmas`."""
    sigmas = np.linspace(1, num_train_timesteps, num_train_timesteps,
                         dtype=np.float32)[::-1] / np.float32(num_train_timesteps)
    picks = [int(i) for i in np.linspace(0, num_train_timesteps - 1, steps)]
    return sigmas[picks]


class BriaPipeline:
    """Bria 3.2 txt2img on gpustd. Components as diffusers names them; `scheduler_config` is
    the folder's `scheduler/scheduler_config.json`."""

    def __init__(self, *, transformer: BriaTransformer2DModel, vae: AutoencoderKL,
                 text_encoder: T5EncoderModel, tokenizer: T5Tokenizer,
                 scheduler_config: dict[str, Any], modules: Sequence[str] = ()) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.modules = list(modules)
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        # the transformer's step, replayed in the plain memory mode (flow_replay): CFG's two
        # passes share one recording (both texts padded to max_sequence_length)
        self.step_replay = StepReplay(timestep_step)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> BriaPipeline:
        """Load a Bria diffusers folder (`load_bria_folder`) onto `device` in `dtype` (T5's
        feed-forward output projections stay float32, as BriaPipeline's card advises);
        `offload`: each network goes to host memory as soon as it is loaded (the text encoder
        before the transformer loads), for a memory mode to bring in as it runs
        (flow_memory)."""
        weights = load_bria_folder(path, variant=variant)
        width = weights.text_encoder.config.get("d_model")
        wanted = weights.transformer.config.get("joint_attention_dim", 4096)
        if width != wanted:
            raise ValueError(f"the text encoder's states are {width} wide, the transformer "
                             f"reads {wanted}: Bria reads T5-XXL's (4096); give the folder's "
                             "own text encoder")
        channels = weights.vae.config.get("latent_channels", 4)
        packed = weights.transformer.config.get("in_channels", 64)
        if 4 * channels != packed:
            raise ValueError(f"the VAE's latents have {channels} channels, the transformer reads "
                             f"{packed} (2x2 patches of {packed // 4}): give the folder's own "
                             "VAE")
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        # the text encoder first: with `offload` it has left the GPU when the transformer loads
        encoder = load(lambda: T5EncoderModel(weights.text_encoder.config, **place),
                       weights.text_encoder)
        return cls(
            transformer=load(lambda: BriaTransformer2DModel(weights.transformer.config,
                                                            **place), weights.transformer),
            vae=load(lambda: AutoencoderKL(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, tokenizer=T5Tokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config)

    def use_vae_file(self, path: str | os.PathLike[str]) -> None:
        """Decode (and encode) with the VAE in the file `path` (the LDM layout or diffusers'
        names), in the place, dtype and config of the folder's. WeightsError in one line for
        a VAE of another latent width."""
        require_vae(path, "2d", int(self.vae.config["latent_channels"]), model="Bria",
                    usual="the folder's vae/ as one file")
        weight = self.vae.decoder.conv_in.weight
        self.vae = load_vae(path, dtype=weight.dtype, device=weight.device,
                            config=self.vae.config)

    def encode_prompt(self, prompts: Sequence[str], max_sequence_length: int = 128) -> Tensor:
        """The prompts' states (B, max_sequence_length, d_model) in the transformer's dtype:
        T5 over each prompt's tokens alone (no padding, no mask), zeros after them; the
        prompts' emphasis weighs them as Forge weighs T5's (text.flow_emphasis). diffusers:
        `BriaPipeline._get_t5_prompt_embeds`."""
        weighted = t5_ids(self.tokenizer, prompts, max_sequence_length)
        rows = []
        for row, count in enumerate(weighted.mask.sum(axis=1)):
            states = self.text_encoder(weighted.ids[row:row + 1, :int(count)]).numpy()
            padded = np.zeros((1, max_sequence_length, states.shape[2]), np.float32)
            padded[:, :states.shape[1]] = states
            rows.append(padded)
        states = emphasize(np.concatenate(rows), weighted, weighted.mask.astype(bool))
        weight = self.transformer.x_embedder.weight
        return asarray(states, dtype=weight.dtype, device=weight.device)

    def shift(self, height: int, width: int) -> float | None:
        """The schedule's `mu` for a picture of height x width where the config shifts
        dynamically (by the number of image tokens), else None (its constant shift)."""
        if not self.scheduler_config.get("use_dynamic_shifting"):
            return None
        scale = self.vae_scale_factor * 2
        return calculate_shift((height // scale) * (width // scale), self.scheduler_config)

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 5.0, negative_prompt: str | Sequence[str] = "",
                 max_sequence_length: int = 128, cache: StepCache | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                            float | None]:
        """The guided transformer as `flow(x, t)` for `prompts` at height x width: x (B, C,
        h, w) float32 latents, t the scheduler's timestep (0..1000), the flow back unpacked
        (float32); guidance applies when guidance_scale > 1 (a second pass on the
        `negative_prompt`'s states, zeros where it is ""). Also the latents' shape and the
        schedule's `mu` (`shift`). `cache`: the generation's step cache, of which each pass
        takes a branch (diffusers' "cond" and "uncond" contexts)."""
        scale = self.vae_scale_factor * 2
        if height < scale or width < scale:
            raise ValueError(f"height and width must be at least {scale}, got {height}x{width}")
        if not 1 <= max_sequence_length <= 512:
            raise ValueError(f"max_sequence_length must be in [1, 512], got "
                             f"{max_sequence_length}")
        weight = self.transformer.x_embedder.weight
        batch, guided = len(prompts), guidance_scale > 1
        h, w = 2 * (int(height) // scale), 2 * (int(width) // scale)
        rotary = self.transformer.rotary(np.zeros((max_sequence_length, 3), np.float32),
                                         image_ids(h // 2, w // 2))
        passes = [self.encode_prompt(prompts, max_sequence_length)]
        if guided:
            negatives = ([negative_prompt] * batch if isinstance(negative_prompt, str)
                         else list(negative_prompt))
            if len(negatives) != batch:
                raise ValueError(f"{len(negatives)} negative prompts for {batch} prompts: give "
                                 "one, or one per prompt")
            passes.append(self.encode_prompt(negatives, max_sequence_length)
                          if any(negatives) else passes[0] * 0.0)
        branches = [None if cache is None else cache.branch() for _ in passes]
        # replayed unless a step cache decides on the host (flow_replay)
        step = self.step_replay.step(self.transformer) if cache is None else None

        def predict(packed: Tensor, states: Tensor, timestep: np.ndarray,
                    branch: Any) -> np.ndarray:
            if step is not None:
                out = step(packed, states, asarray(timestep, device=packed.device), rotary)
            else:
                out = self.transformer(packed, states, timestep, rotary=rotary, cache=branch)
            return out.numpy().astype(np.float32)

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            packed = asarray(pack_latents(x), dtype=weight.dtype, device=weight.device)
            timestep = np.full(batch, t, np.float32)
            preds = [predict(packed, states, timestep, branch)
                     for states, branch in zip(passes, branches)]
            out = preds[0] if not guided else combine(preds[1], preds[0], None,
                                                      np.float32(guidance_scale))
            return unpack_latents(out, h, w)

        shape = (batch, self.transformer.config["in_channels"] // 4, h, w)
        return flow, shape, self.shift(height, width)

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | Sequence[str] = "",
                 height: int = 1024, width: int = 1024, num_inference_steps: int = 30,
                 guidance_scale: float = 5.0, max_sequence_length: int = 128, seed: int = 0,
                 rng: str = "torch", latents: np.ndarray | None = None, image: Any = None,
                 mask_image: Any = None, strength: float = 0.6,
                 callback: StepCallback | None = None, output_type: str = "np",
                 cache: StepCache | None = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, C, H/8, W/8) ("latent"). Guidance as `velocity`.
        `seed` and `rng` ("torch", as diffusers; "numpy") draw the starting noise unless
        `latents` is given; `image` (PIL or HxWx3 uint8; with `mask_image`, white = repaint)
        starts from that picture at `strength`, as FLUX's img2img and inpainting do (diffusers
        has no Bria img2img); `callback(done, total, latents)` after every step (False
        stops); `cache`: step caching. diffusers: `BriaPipeline(prompt, negative_prompt=,
        height=, width=, num_inference_steps=, guidance_scale=, max_sequence_length=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        check_sides(height, width, self.vae_scale_factor * 2, "Bria")
        # 1. conditioning, as a function of the latents and the timestep
        flow, shape, mu = self.velocity(prompts, height=height, width=width,
                                        guidance_scale=guidance_scale,
                                        negative_prompt=negative_prompt,
                                        max_sequence_length=max_sequence_length, cache=cache)
        # 2. the schedule: the training sigmas shifted by a constant, or FLUX's
        config = self.scheduler_config
        sigmas = None if mu is not None else training_sigmas(
            num_inference_steps, int(config.get("num_train_timesteps", 1000))).tolist()
        scheduler = flow_schedule(config, num_inference_steps, mu, sigmas)
        # 3. the start, Euler steps along the flow, the pictures out of the latent space
        return run_euler(self.vae, scheduler, shape, flow, generator=make_generator(rng, seed),
                         latents=latents, image=image, mask=mask_image, strength=strength,
                         callback=callback, output_type=output_type,
                         device=self.transformer.x_embedder.weight.device, lender=self)
