"""NVIDIA's Sana (1.0 and 1.5, 512 to 4096 pixels) and Sana Sprint, as diffusers'
SanaPipeline and SanaSprintPipeline draw them: Gemma 2's last hidden states of the prompt
behind Sana's complex human instruction (diffusion.models.sana_prompt) condition the Sana
transformer over DC-AE latents (32x smaller, 32 channels, scaled by the VAE's
`scaling_factor`, no shift).

Sana: the folder's DPMSolverMultistepScheduler on flow sigmas (DPM-Solver++ 2M, its
`flow_shift`; schedulers.dpm_solver_flow) steps the velocity from noise; CFG
(`guidance_scale` > 1) as diffusers', `neg + g * (pos - neg)` with the negative prompt
without the instruction. Sana Sprint (the folder's pipeline class says which): its SCM
consistency steps (sana_sprint), the guidance embedded, no negative prompt. With the torch
RNG a seed gives diffusers' picture (`generator=torch.Generator("cpu").manual_seed(seed)`).
As diffusers' by default (`use_resolution_binning`), a size is drawn at the model's
aspect-ratio bin nearest to it and resized back (sana_bins); False: drawn as asked.

    pipe = SanaPipeline.from_pretrained("Sana_1600M_1024px_diffusers")
    images = pipe("a red circle", num_inference_steps=20, guidance_scale=4.5, seed=7)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import asarray

from ...imaging import to_unit_image
from ...loaders.formats.diffusers_folder import component_config
from ...loaders.sana.folder import load_sana_folder
from ...loaders.sana.transformer import load_sana_transformer
from ...loaders.sana.vae import load_sana_vae
from ...loaders.vae_kind import require_vae
from ...models.dc_ae import AutoencoderDC
from ...models.llm import LLMTextModel
from ...models.sana import SanaTransformer2DModel
from ...models.sana_prompt import COMPLEX_HUMAN_INSTRUCTION, encode
from ...noise.rng import make_generator
from ...sampling.scheduler_loop import scheduler_loop
from ...sampling.schedulers.dpm_solver_flow import FlowDPMSolverMultistepScheduler
from ...text.llm_tokenizer import LLMTokenizer
from .flow_memory import load_network
from .sana_bins import binned_size, resize_and_crop
from .sana_sprint import run_scm
from .start import StepCallback, check_call, check_sides

__all__ = ["SanaPipeline"]

Flow = Callable[[np.ndarray, float], np.ndarray]


class SanaPipeline:
    """Sana or Sana Sprint (`sprint`) txt2img on gpustd. Components as diffusers names
    them; `scheduler_config` is the folder's `scheduler/scheduler_config.json`."""

    def __init__(self, *, transformer: SanaTransformer2DModel, vae: AutoencoderDC,
                 text_encoder: LLMTextModel, tokenizer: LLMTokenizer,
                 scheduler_config: dict[str, Any], sprint: bool = False) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.sprint = sprint
        # the WebUI samplers' FlowSchedule reads a constant shift as `shift`
        self.scheduler_config = {**scheduler_config,
                                 "shift": float(scheduler_config.get("flow_shift", 1.0))}
        self.vae_scale_factor = vae.spatial_compression_ratio
        # diffusers: the transformer's sample_size latents (32: 1024 pixels)
        self.default_size = int(transformer.config["sample_size"]) * self.vae_scale_factor

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        transformer_file: str | Path | None = None,
                        offload: bool = False) -> SanaPipeline:
        """Load a Sana or Sana Sprint diffusers folder (`load_sana_folder`) onto `device` in
        `dtype`; `transformer_file`: a single-file transformer in NVIDIA's original layout
        (`load_sana_transformer`; .pth or .safetensors) in place of the folder's, whose
        transformer/config.json, where it has one, gives what the shapes do not (the
        picture size, 2K's and 4K's position embeddings); `offload`: each network goes to
        host memory as soon as it is loaded (the text encoder before the transformer loads),
        for a memory mode to bring in as it runs (flow_memory)."""
        skip = () if transformer_file is None else ("transformer",)
        weights = load_sana_folder(path, variant=variant, skip=skip)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        if transformer_file is not None:
            transformer = load_sana_transformer(
                transformer_file, config=component_config(path, "transformer"))
        assert transformer is not None and text_encoder is not None
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        # the text encoder first: with `offload` it has left the GPU when the transformer loads
        encoder = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        return cls(
            transformer=load(lambda: SanaTransformer2DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderDC(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config, sprint=weights.sprint)

    def use_vae_file(self, path: str | Path) -> None:
        """Decode with the DC-AE in the file `path` (mit-han-lab's original names or
        diffusers'), in the place, dtype and config of the folder's. WeightsError in one line
        for another kind of VAE."""
        require_vae(path, "dc-ae", int(self.vae.config["latent_channels"]), model="Sana",
                    usual="the folder's vae/ or mit-han-lab's dc-ae-f32c32-sana file")
        weight, config = self.vae.decoder.conv_in.weight, self.vae.config
        self.vae = load_network(
            lambda: AutoencoderDC(config, dtype=weight.dtype, device=weight.device),
            load_sana_vae(path, config=config), device=weight.device, offload_to_host=False)

    def predict(self, x: np.ndarray, timesteps: np.ndarray, states: np.ndarray,
                mask: np.ndarray, guidance: np.ndarray | None = None) -> np.ndarray:
        """The transformer's float32 output for latents x (B, C, h, w) at `timesteps` (B,)
        as it embeds them, the captions' states and mask (and Sprint's scaled guidance),
        the learned-sigma half dropped where a model has one (diffusers' chunk)."""
        dtype, device = self.transformer.dtype, self.transformer.device
        out = self.transformer(asarray(x, dtype=dtype, device=device),
                               asarray(states, dtype=dtype, device=device), timesteps,
                               guidance=guidance, encoder_attention_mask=mask)
        out = out.numpy().astype(np.float32)
        return out[:, :x.shape[1]] if out.shape[1] == 2 * x.shape[1] else out

    def prompt_states(self, prompts: Sequence[str], *, max_sequence_length: int = 300,
                      instruction: Sequence[str] = COMPLEX_HUMAN_INSTRUCTION
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(states, mask) of `prompts` (sana_prompt.encode, unpadded: the same pictures)."""
        return encode(self.text_encoder, self.tokenizer, prompts, padded=False,
                      max_sequence_length=max_sequence_length, instruction=instruction)

    def latent_shape(self, batch: int, height: int, width: int) -> tuple[int, ...]:
        """The latents' shape (B, C, height / f, width / f) of a run, after the size check
        (diffusers': multiples of 32)."""
        patch = int(self.transformer.config.get("patch_size", 1))
        check_sides(height, width, max(32, self.vae_scale_factor * patch), "Sana")
        return (batch, int(self.transformer.config["in_channels"]),
                height // self.vae_scale_factor, width // self.vae_scale_factor)

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 4.5, negative_prompt: str | Sequence[str] = "",
                 max_sequence_length: int = 300, cache: Any = None
                 ) -> tuple[Flow, tuple[int, ...], None]:
        """Sana's model as `flow(x, t)` for `prompts` at height x width: x (B, C, h, w)
        float32 latents, t the scheduler's timestep (0..1000), the velocity (x0 = x - sigma
        flow) with diffusers' CFG; also the latents' shape and mu (None: a constant shift).
        ValueError for Sana Sprint (its steps are its own) or a step cache."""
        if self.sprint:
            raise ValueError("Sana Sprint runs its own consistency steps: use the "
                             "'diffusers' sampler")
        if cache is not None:
            raise ValueError("Sana runs without a step cache; leave --cache out")
        batch = len(prompts)
        shape = self.latent_shape(batch, height, width)
        states, mask = self.prompt_states(prompts, max_sequence_length=max_sequence_length)
        guided = guidance_scale > 1  # SanaPipeline.do_classifier_free_guidance
        if guided:
            negatives = ([negative_prompt] * batch if isinstance(negative_prompt, str)
                         else list(negative_prompt))
            if len(negatives) != batch:
                raise ValueError(f"{len(negatives)} negative prompts for {batch} prompts: give "
                                 "one, or one for each prompt")
            negative = self.prompt_states(negatives, max_sequence_length=max_sequence_length,
                                          instruction=())
            states, mask = _joined(negative, (states, mask))
        scale = np.float32(self.transformer.config.get("timestep_scale", 1.0))

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            rows = 2 * batch if guided else batch
            times = np.full(rows, np.float32(t) * scale, np.float32)
            pred = self.predict(np.concatenate([x, x]) if guided else x, times, states, mask)
            if not guided:
                return pred
            return pred[:batch] + np.float32(guidance_scale) * (pred[batch:] - pred[:batch])

        return flow, shape, None

    def decode(self, latents: np.ndarray,
               run: Callable[[Any, np.ndarray], np.ndarray] | None = None,
               size: tuple[int, int] | None = None) -> np.ndarray:
        """Images (B, H, W, 3) in [0, 1] of transformer latents (B, C, h, w): divided by the
        VAE's scaling factor, decoded in the VAE's dtype; `run(vae, z)`: a memory mode's
        decode (MemoryModes.memory_decode); `size` (height, width): resized to cover it and
        cropped, before the clip to [0, 1] as diffusers' resolution binning."""
        z = latents / np.float32(self.vae.scaling_factor)
        if run is not None:
            images = run(self.vae, z)
        else:
            weight = self.vae.decoder.conv_in.weight
            images = self.vae.decode(asarray(z, dtype=weight.dtype, device=weight.device)
                                     ).numpy().astype(np.float32)
        if size is not None:
            images = resize_and_crop(images, *size)
        return np.clip(images / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)

    def __call__(self, prompt: str | Sequence[str], *, height: int | None = None,
                 width: int | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float = 4.5, negative_prompt: str | Sequence[str] = "",
                 max_timesteps: float = 1.57080, intermediate_timesteps: float | None = None,
                 seed: int = 0, rng: str = "torch", max_sequence_length: int = 300,
                 latents: np.ndarray | None = None, image: Any = None,
                 mask_image: Any = None, strength: float = 0.6,
                 callback: StepCallback | None = None, output_type: str = "np",
                 cache: Any = None, use_resolution_binning: bool = True) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 32, H/32, W/32) ("latent"); height and width the
        transformer's sample_size in pixels unless given; steps 20 (Sprint: 2).
        `guidance_scale`: CFG (Sprint: the embedded guidance; it has no negative prompt);
        `max_timesteps`, `intermediate_timesteps` (two steps only; 1.3 there unless given):
        Sprint's SCM angles. `seed` and `rng` ("torch", as diffusers; "numpy") draw the noise
        unless `latents` is given. Sprint's `image` (PIL or HxWx3 uint8, resized to the size
        drawn): img2img from it at `strength` (Sana's own sampler and inpainting have none in
        diffusers: ValueError). `callback(done, total, latents)` after every step (False
        stops). `use_resolution_binning`: drawn at the nearest aspect-ratio bin of the
        transformer's sample size, the pictures resized back (the latents stay the bin's;
        sample sizes diffusers has no bins for are drawn as asked). diffusers:
        `SanaPipeline(prompt, height=, width=, num_inference_steps=, guidance_scale=,
        negative_prompt=, generator=torch.Generator().manual_seed(seed),
        use_resolution_binning=, output_type="np").images` (SanaSprintPipeline's with
        `max_timesteps=`, `intermediate_timesteps=`; SanaSprintImg2ImgPipeline's with
        `image=`, `strength=`)."""
        steps = num_inference_steps or (2 if self.sprint else 20)
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=steps)
        if image is not None and not self.sprint:
            raise ValueError("Sana's own sampler draws from noise only (diffusers has no Sana "
                             "img2img): pick a WebUI sampler (Euler) for an init image")
        if mask_image is not None:
            raise ValueError("Sana Sprint has no inpainting (diffusers has none): leave the "
                             "mask out")
        height = self.default_size if height is None else height
        width = self.default_size if width is None else width
        asked = (height, width)
        if use_resolution_binning:
            sample_size = int(self.transformer.config["sample_size"])
            height, width = binned_size(sample_size, height, width) or asked
        generator = make_generator(rng, seed)
        if self.sprint:
            if cache is not None:
                raise ValueError("Sana Sprint runs without a step cache; leave --cache out")
            shape = self.latent_shape(len(prompts), height, width)
            init = None if image is None else self.image_latents(image, height, width)
            out = run_scm(self, prompts, shape, steps=steps, guidance_scale=guidance_scale,
                          max_timesteps=max_timesteps,
                          intermediate_timesteps=intermediate_timesteps,
                          max_sequence_length=max_sequence_length, generator=generator,
                          latents=latents, callback=callback, image_latents=init,
                          strength=strength)
        else:
            # 1. conditioning, as a function of the latents and the timestep
            flow, shape, _ = self.velocity(prompts, height=height, width=width,
                                           guidance_scale=guidance_scale,
                                           negative_prompt=negative_prompt,
                                           max_sequence_length=max_sequence_length,
                                           cache=cache)
            # 2. the folder's DPM-Solver++ on flow sigmas, from noise
            scheduler = FlowDPMSolverMultistepScheduler.from_config(self.scheduler_config)
            scheduler.set_timesteps(steps)
            start = generator.standard_normal(shape) if latents is None else latents
            out = scheduler_loop(_checked(start, shape), scheduler.timesteps, scheduler,
                                 lambda x, t, i: (flow(x, t), None), dtype=np.float32,
                                 callback=callback)
        if output_type == "latent":
            return out
        return self.decode(out, size=asked if asked != (height, width) else None)

    def image_latents(self, image: Any, height: int, width: int) -> np.ndarray:
        """The DC-AE's latents (1, 32, h, w) of `image` resized to height x width (Lanczos),
        times the VAE's scaling factor: the transformer's space. diffusers:
        `vae.encode(image_processor.preprocess(image, height, width)).latent * scaling`."""
        weight = self.vae.decoder.conv_in.weight
        pixels = to_unit_image(image, width, height)
        encoded = self.vae.encode(asarray(pixels, dtype=weight.dtype, device=weight.device))
        return encoded.numpy().astype(np.float32) * np.float32(self.vae.scaling_factor)


def _checked(latents: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`latents` as float32, ValueError in one line unless of `shape`."""
    latents = np.asarray(latents, np.float32)
    if latents.shape != shape:
        raise ValueError(f"latents must have shape {shape}, got {latents.shape}")
    return latents


def _joined(first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray]
            ) -> tuple[np.ndarray, np.ndarray]:
    """Two batches of (states (B, L, D), mask (B, L)) as one, the shorter right-padded with
    zero rows and mask (rows the transformer never reads: sana_prompt)."""
    length = max(first[1].shape[1], second[1].shape[1])

    def pad(array: np.ndarray) -> np.ndarray:
        widths = [(0, 0)] * array.ndim
        widths[1] = (0, length - array.shape[1])
        return np.pad(array, widths)

    return (np.concatenate([pad(first[0]), pad(second[0])]),
            np.concatenate([pad(first[1]), pad(second[1])]))
