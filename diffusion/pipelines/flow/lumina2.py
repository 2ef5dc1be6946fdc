"""Lumina Image 2.0 (and its fine-tunes, Neta Lumina), as diffusers' Lumina2Pipeline draws
it: Gemma 2's second-to-last hidden states of the prompt behind Lumina 2's system prompt
(diffusion.models.lumina2_prompt) condition the Lumina 2 transformer; the
FlowMatchEulerDiscreteScheduler steps the negated model output from noise over sigmas
1 .. 1/n, shifted as the folder's scheduler says; FLUX's 16-channel VAE decodes. CFG
(`guidance_scale` > 1) as diffusers': `neg + g * (pos - neg)`, for the first
`cfg_trunc_ratio` of the steps only (the rest run the prompt's pass alone), and with
`cfg_normalization` each row of the guided prediction (its last axis) rescaled to the norm
of the prompt's. With the torch RNG, a seed gives diffusers' picture
(`generator=torch.Generator("cpu").manual_seed(seed)`). From an init image (and a mask) it
starts as the flow families' img2img and inpainting do (diffusion.pipelines.flow.start;
diffusers has no Lumina 2 img2img pipeline).

    pipe = Lumina2Pipeline.from_pretrained("Lumina-Image-2.0")
    images = pipe("a red circle", num_inference_steps=50, guidance_scale=4.0,
                  cfg_trunc_ratio=0.25, seed=7)
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

from ...loaders.flow.text_encoder_file import module_stem
from ...loaders.formats.diffusers_folder import component_config
from ...loaders.lumina2 import load_lumina2_folder, load_lumina2_transformer
from ...loaders.sd.vae_file import load_vae
from ...loaders.vae_kind import require_vae
from ...loaders.z_image import load_llm_file
from ...models import AutoencoderKL
from ...models.llm import LLMTextModel
from ...models.lumina2 import Lumina2Transformer2DModel
from ...models.lumina2_prompt import encode, lumina2_prompt
from ...noise.rng import make_generator
from ...sampling.model_sampling import calculate_shift
from ...text.llm_tokenizer import LLMTokenizer
from .flow_memory import load_network
from .flow_replay import MaskKey, StepReplay, mask_key, mask_of
from .lumina2_guidance import guided_until, lumina2_cfg
from .start import (
    StepCallback,
    check_call,
    check_sides,
    flow_schedule,
    run_euler,
    single_files,
)

__all__ = ["Lumina2Pipeline"]


class Lumina2Pipeline:
    """Lumina Image 2.0 txt2img on gpustd. Components as diffusers names them;
    `scheduler_config` is the folder's `scheduler/scheduler_config.json`."""

    def __init__(self, *, transformer: Lumina2Transformer2DModel, vae: AutoencoderKL,
                 text_encoder: LLMTextModel, tokenizer: LLMTokenizer,
                 scheduler_config: dict[str, Any], modules: Sequence[str] = ()) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.modules = list(modules)  # the module files' names, for the infotext
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        # diffusers: default_sample_size * vae_scale_factor (128 latents: 1024 pixels)
        self.default_size = int(transformer.config.get("sample_size", 128)) * 8
        # the transformer's step, replayed in the plain memory mode (flow_replay): CFG's
        # batch and the unguided one (cfg_trunc_ratio) at two sizes (hires)
        self.step_replay = StepReplay(_transformer_step, max_signatures=4)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        transformer_file: str | os.PathLike[str] | None = None,
                        text_encoder_files: Sequence[str | os.PathLike[str]] = (),
                        offload: bool = False) -> Lumina2Pipeline:
        """Load a Lumina 2 diffusers folder (`load_lumina2_folder`) onto `device` in `dtype`;
        `transformer_file`: a single-file transformer in the original layout
        (Lumina-Image-2.0's or Neta Lumina's, bare or in a ComfyUI checkpoint;
        `load_lumina2_transformer`) in place of the folder's, whose transformer/config.json,
        where it has one, gives what the shapes do not; `text_encoder_files`: a Gemma 2 file
        (ComfyUI's `gemma_2_2b_fp16.safetensors`; `load_llm_file`) in place of the folder's
        text_encoder/, which need then hold no weights; `offload`: each network goes to host
        memory as soon as it is loaded (the text encoder before the transformer loads), for
        a memory mode to bring in as it runs (flow_memory)."""
        files, skip = single_files("Lumina 2", "its Gemma 2", transformer_file,
                                   text_encoder_files)
        weights = load_lumina2_folder(path, variant=variant, skip=skip)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        if transformer_file is not None:
            transformer = load_lumina2_transformer(
                transformer_file, config=component_config(path, "transformer"))
        if files:
            text_encoder = load_llm_file(files[0], config=component_config(path, "text_encoder"),
                                         kind="gemma2")
        assert transformer is not None and text_encoder is not None
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        # the text encoder first: with `offload` it has left the GPU when the transformer loads
        encoder = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        return cls(
            transformer=load(lambda: Lumina2Transformer2DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKL(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config, modules=[module_stem(f) for f in files])

    def use_vae_file(self, path: str | os.PathLike[str]) -> None:
        """Decode with FLUX's VAE in the file `path` (`ae.safetensors`, Black Forest Labs'
        names or diffusers'), in the place, dtype and config of the folder's. WeightsError in
        one line for another family's VAE."""
        require_vae(path, "2d", int(self.vae.config["latent_channels"]), model="Lumina 2",
                    usual="FLUX's ae.safetensors")
        weight = self.vae.decoder.conv_in.weight
        self.vae = load_vae(path, dtype=weight.dtype, device=weight.device,
                            config=self.vae.config)

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 num_inference_steps: int, guidance_scale: float = 4.0,
                 negative_prompt: str | Sequence[str] = "", cfg_trunc_ratio: float = 1.0,
                 cfg_normalization: bool = True, system_prompt: str | None = None,
                 max_sequence_length: int = 256, cache: Any = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """The model as `flow(x, t)` for `prompts` at height x width: x (B, C, h, w) float32
        latents, t the scheduler's timestep (0..1000), the flow the scheduler steps along
        (the negated model output, with diffusers' CFG while the run is in its first
        `cfg_trunc_ratio` of `num_inference_steps` steps: lumina2_guidance); also the
        latents' shape and the schedule's `mu`. `cache`: no step cache runs here (None)."""
        if cache is not None:
            raise ValueError("Lumina 2 runs without a step cache; leave --cache out")
        batch = len(prompts)
        states, mask = encode(self.text_encoder, self.tokenizer,
                              [lumina2_prompt(p, system_prompt) for p in prompts],
                              max_sequence_length=max_sequence_length, padded=False)
        guided = guidance_scale > 1  # Lumina2Pipeline.do_classifier_free_guidance
        if guided:
            negatives = ([negative_prompt] * batch if isinstance(negative_prompt, str)
                         else list(negative_prompt))
            if len(negatives) != batch:
                raise ValueError(f"{len(negatives)} negative prompts for {batch} prompts: give "
                                 "one, or one for each prompt")
            negative = encode(self.text_encoder, self.tokenizer, negatives,
                              max_sequence_length=max_sequence_length, padded=False)
            states, mask = _joined((states, mask), negative)
        h, w = 2 * (int(height) // (2 * self.vae_scale_factor)), 2 * (
            int(width) // (2 * self.vae_scale_factor))
        channels = int(self.transformer.config["in_channels"])
        # diffusers measures "image_seq_len" as latents.shape[1], the channel count; it only
        # counts where the folder's scheduler shifts dynamically (Lumina 2's does not)
        mu = calculate_shift(channels, self.scheduler_config)
        cut = guided_until(self.scheduler_config, num_inference_steps, mu, cfg_trunc_ratio)
        dtype, device = self.transformer.dtype, self.transformer.device
        step = self.step_replay.step(self.transformer)  # eager under a memory mode
        # the captions uploaded once a generation: the prompts' alone and with the negatives'
        texts = {rows: asarray(states[:rows], dtype=dtype, device=device)
                 for rows in {batch, len(states)}}

        def run(x: np.ndarray, time: np.float32, rows: int) -> np.ndarray:
            times = asarray(np.full(len(x), time, np.float32), device=device)
            out = step(asarray(x, dtype=dtype, device=device), times, texts[rows],
                       mask_key(mask[:rows]))
            return out.numpy().astype(np.float32)  # type: ignore[no-any-return]

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            # diffusers: 1 - t / num_train_timesteps, in float32
            time = np.float32(1) - np.float32(t) / np.float32(1000)
            if not (guided and t >= cut):
                return -run(x, time, batch)
            pred = run(np.concatenate([x, x]), time, 2 * batch)
            return -lumina2_cfg(pred[:batch], pred[batch:], guidance_scale, cfg_normalization)

        return flow, (batch, channels, h, w), mu

    def __call__(self, prompt: str | Sequence[str], *, height: int | None = None,
                 width: int | None = None, num_inference_steps: int = 30,
                 guidance_scale: float = 4.0, negative_prompt: str | Sequence[str] = "",
                 cfg_trunc_ratio: float = 1.0, cfg_normalization: bool = True,
                 system_prompt: str | None = None, seed: int = 0, rng: str = "torch",
                 max_sequence_length: int = 256, latents: np.ndarray | None = None,
                 image: Any = None, mask_image: Any = None, strength: float = 0.6,
                 callback: StepCallback | None = None, output_type: str = "np",
                 cache: Any = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 16, H/8, W/8) ("latent"); height and width 1024
        (the transformer's sample_size) unless given. `guidance_scale`, `cfg_trunc_ratio`,
        `cfg_normalization`, `system_prompt`, `max_sequence_length`: diffusers'. `seed` and
        `rng` ("torch", as diffusers; "numpy") draw the starting noise unless `latents` is
        given. `image` (PIL or HxWx3 uint8; with `mask_image`, white = repaint) starts from
        that picture at `strength`. `callback(done, total, latents)` after every step (False
        stops). diffusers: `Lumina2Pipeline(prompt, height=, width=, num_inference_steps=,
        guidance_scale=, negative_prompt=, cfg_trunc_ratio=, cfg_normalization=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        height = self.default_size if height is None else height
        width = self.default_size if width is None else width
        check_sides(height, width, self.vae_scale_factor * 2, "Lumina 2")
        # 1. conditioning, as a function of the latents and the timestep
        flow, shape, mu = self.velocity(
            prompts, height=height, width=width, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, negative_prompt=negative_prompt,
            cfg_trunc_ratio=cfg_trunc_ratio, cfg_normalization=cfg_normalization,
            system_prompt=system_prompt, max_sequence_length=max_sequence_length, cache=cache)
        # 2. the schedule: sigmas 1 .. 1/n, shifted as the folder's scheduler says
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu)
        # 3. the start (noise, or the init image noised to the first kept sigma), Euler steps
        # along the flow, the pictures out of the latent space
        return run_euler(self.vae, scheduler, shape, flow, generator=make_generator(rng, seed),
                         latents=latents, image=image, mask=mask_image, strength=strength,
                         callback=callback, output_type=output_type,
                         device=self.transformer.device, lender=self)


def _transformer_step(transformer: Lumina2Transformer2DModel, latents: Tensor,
                      timestep: Tensor, states: Tensor, mask: MaskKey | None) -> Tensor:
    """The transformer's call of a step (StepReplay's captured function): the latents, the
    timesteps (a float32 Tensor) and the captions' states inputs; their mask, read on the
    host (each caption's length: `mask_key`), a static argument."""
    return transformer(latents, timestep, states, mask_of(mask))


def _joined(first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray]
            ) -> tuple[np.ndarray, np.ndarray]:
    """Two batches of (states (B, L, D), mask (B, L)) as one, the shorter right-padded with
    zero rows and mask (rows the transformer never reads: lumina2_prompt)."""
    length = max(first[1].shape[1], second[1].shape[1])

    def pad(array: np.ndarray) -> np.ndarray:
        widths = [(0, 0)] * array.ndim
        widths[1] = (0, length - array.shape[1])
        return np.pad(array, widths)

    return (np.concatenate([pad(first[0]), pad(second[0])]),
            np.concatenate([pad(first[1]), pad(second[1])]))
