"""Chroma text-to-image, as diffusers' ChromaPipeline draws it: T5-XXL's states of the
prompt (its padding masked, one pad token kept) condition the Chroma transformer, which
predicts the flow of packed 2x2 latent patches; classifier-free guidance with the negative
prompt (a second pass); FlowMatchEulerDiscreteScheduler shifted by the number of image tokens;
FLUX's 16-channel VAE decodes. With the torch RNG a seed gives diffusers' picture.

The padding is masked out of the transformer's attention (keys), as Chroma was trained;
ChromaPipeline passes its mask as float 0 / 1, which torch adds to the scores instead
(diffusers issue 12116): its pictures equal these with the mask given as booleans.

    pipe = ChromaPipeline.from_pretrained("Chroma1-HD")
    images = pipe("a red circle", negative_prompt="blurry", height=1024, width=1024, seed=7)
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

from ...loaders.flow.chroma import load_chroma
from ...loaders.flow.gguf import load_chroma_gguf
from ...models import AutoencoderKL, ChromaTransformer2DModel, T5EncoderModel
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.guidance import combine
from ...sampling.model_sampling import calculate_shift
from ...text.flow_emphasis import emphasize, t5_ids
from ...text.t5_tokenizer import T5Tokenizer
from .flow_memory import load_network
from .flow_replay import MaskKey, StepReplay, lent_steps, mask_key, mask_of
from .flux import image_ids, pack_latents, unpack_latents
from .flux1_memory import to_host
from .start import StepCallback, check_call, decode, flow_schedule, run_euler

__all__ = ["ChromaPipeline"]


class ChromaPipeline:
    """Chroma txt2img on gpustd. Components as diffusers names them; `scheduler_config` is
    the folder's `scheduler/scheduler_config.json`."""

    def __init__(self, *, transformer: ChromaTransformer2DModel, vae: AutoencoderKL,
                 text_encoder: T5EncoderModel, tokenizer: T5Tokenizer,
                 scheduler_config: dict[str, Any], modules: Sequence[str] = ()) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.modules = list(modules)  # the stems of the T5 / VAE files used
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        # the transformer's step (each pass's: the prompt's, the negative's), replayed in the
        # plain memory mode (flow_replay)
        self.step_replay = StepReplay(_transformer_step)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        text_encoder_files: Sequence[str | os.PathLike[str]] = (),
                        offload: bool = False) -> ChromaPipeline:
        """Load a Chroma diffusers folder, or the original transformer file (or its GGUF,
        kept quantized: diffusion.loaders.flow.gguf) with its T5 and VAE from
        `text_encoder_files` (diffusion.loaders.flow.chroma), onto `device` in `dtype`.
        Without a tokenizer folder the bundled T5 tokenizer is used. `offload`: each network
        goes to host memory as soon as it is loaded (flux1_memory)."""
        weights, modules = load_chroma(path, list(text_encoder_files), variant=variant)
        place = {"dtype": dtype, "device": device or default_device()}
        transformer = weights.transformer
        model = load_chroma_gguf(path, to_host=offload, **place) if transformer is None else None
        # built deferred (gpustd.nn.deferred, in load_network): a parameter takes GPU memory as
        # its values arrive; with `offload` each network goes to host memory once loaded
        device = place["device"]
        load = partial(load_network, device=device, offload_to_host=offload)
        text_encoder = load(lambda: T5EncoderModel(weights.text_encoder.config, **place),
                            weights.text_encoder)
        if model is None:
            assert transformer is not None  # a GGUF's is loaded above
            model = load(lambda: ChromaTransformer2DModel(transformer.config, **place),
                         transformer)
        else:
            to_host(model, device, offload)
        return cls(
            transformer=model,
            vae=load(lambda: AutoencoderKL(weights.vae.config, **place), weights.vae),
            text_encoder=text_encoder, tokenizer=T5Tokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config, modules=modules)

    def encode_prompt(self, prompts: Sequence[str], max_sequence_length: int = 512
                      ) -> tuple[Tensor, np.ndarray | None]:
        """(T5 states (B, L, joint_attention_dim) in the transformer's dtype, the text keys'
        mask (B, L) or None). diffusers: `ChromaPipeline._get_t5_prompt_embeds`: T5 reads the
        prompts with the tokenizer's mask, and the transformer attends to each prompt's
        tokens and its first pad. The states stop after the longest prompt's pad: no token
        attends to those after it, and T5 positions are relative, so the result is the same
        as diffusers' over all `max_sequence_length` tokens; the mask is None when every
        prompt keeps all L tokens. The prompts' emphasis weighs the states as Forge weighs
        them (text.flow_emphasis; "Original"'s means over the tokens the transformer reads)."""
        weighted = t5_ids(self.tokenizer, prompts, max_sequence_length)
        ids, mask = weighted.ids, weighted.mask
        keep = np.minimum(mask.sum(axis=1) + 1, ids.shape[1])  # the prompt and one pad
        length = int(keep.max())
        text_keys = np.arange(length)[None, :] < keep[:, None]
        states = emphasize(self.text_encoder(ids[:, :length], mask[:, :length]), weighted,
                           text_keys)
        dtype = self.transformer.x_embedder.weight.dtype
        return states.astype(dtype), None if text_keys.all() else text_keys

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 negative_prompt: str = "", guidance_scale: float = 5.0,
                 max_sequence_length: int = 512, cache: StepCache | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """The guided transformer as `flow(x, t)` for `prompts` at height x width: x (B, C,
        h, w) float32 latents, t the scheduler's timestep (0..1000), the flow back unpacked
        (float32); guidance applies when guidance_scale > 1 (the `negative_prompt` for every
        row, its own transformer pass as ChromaPipeline runs it). Also the latents' shape and
        the schedule's `mu` (the shift by the number of image tokens). `cache`: the
        generation's step cache, of which each prompt's pass takes a branch of its own."""
        scale = self.vae_scale_factor * 2
        if height < scale or width < scale:
            raise ValueError(f"height and width must be at least {scale}, got {height}x{width}")
        device = self.transformer.x_embedder.weight.device
        dtype = self.transformer.x_embedder.weight.dtype
        batch, guided = len(prompts), guidance_scale > 1
        h, w = 2 * (int(height) // scale), 2 * (int(width) // scale)
        image_positions = image_ids(h // 2, w // 2)

        def conditioned(texts: Sequence[str]) -> Callable[[Tensor, np.ndarray], np.ndarray]:
            states, text_keys = self.encode_prompt(texts, max_sequence_length)
            mask = None if text_keys is None else np.concatenate(
                [text_keys, np.ones((batch, len(image_positions)), bool)], axis=1)
            rotary = self.transformer.rotary(np.zeros((states.shape[1], 3), np.float32),
                                             image_positions)
            branch = None if cache is None else cache.branch()
            key = mask_key(mask)

            def run(x: Tensor, timestep: np.ndarray) -> np.ndarray:
                if step is not None:  # the timestep's approximator inputs made on the host
                    inputs = asarray(self.transformer.approximator_inputs(timestep),
                                     dtype=dtype, device=device)
                    out = step(x, states, inputs, rotary, key)
                else:
                    out = self.transformer(x, states, timestep, None, None, mask,
                                           rotary=rotary, cache=branch)
                return out.numpy().astype(np.float32)
            return run

        # replayed unless a step cache decides on the host: bound once a generation
        step = self.step_replay.step(self.transformer) if cache is None else None

        positive = conditioned(prompts)
        negative = conditioned([negative_prompt] * batch) if guided else None

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            packed = asarray(pack_latents(x), dtype=dtype, device=device)
            timestep = np.full(batch, np.float32(t) / np.float32(1000), np.float32)
            out = positive(packed, timestep)
            if negative is not None:
                out = combine(negative(packed, timestep), out, None, np.float32(guidance_scale))
            return unpack_latents(out, h, w)

        mu = calculate_shift((h // 2) * (w // 2), self.scheduler_config)
        return flow, (batch, self.transformer.config["in_channels"] // 4, h, w), mu

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str = "",
                 height: int = 1024, width: int = 1024, num_inference_steps: int = 35,
                 guidance_scale: float = 5.0, seed: int = 0, rng: str = "torch",
                 max_sequence_length: int = 512, latents: np.ndarray | None = None,
                 image: Any = None, mask_image: Any = None, strength: float = 0.6,
                 callback: StepCallback | None = None, output_type: str = "np",
                 cache: StepCache | None = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 16, H/8, W/8) ("latent"). Guidance applies when
        guidance_scale > 1. `seed`/`rng`, `latents`, `image`/`mask_image`/`strength`,
        `callback` and `cache` as FluxPipeline. diffusers: `ChromaPipeline(prompt, negative_prompt=,
        height=, width=, num_inference_steps=, guidance_scale=, generator=torch.Generator()
        .manual_seed(seed), output_type="np").images` (with boolean masks, module
        docstring); with `image`, ChromaImg2ImgPipeline's call with `strength=`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        device = self.transformer.x_embedder.weight.device
        # 1. conditioning, as a function of the latents and the timestep
        flow, shape, mu = self.velocity(prompts, height=height, width=width,
                                        negative_prompt=negative_prompt,
                                        guidance_scale=guidance_scale,
                                        max_sequence_length=max_sequence_length, cache=cache)
        # 2. the schedule: sigmas 1 .. 1/n, shifted by the number of image tokens
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu)
        # 3. the start, Euler steps along the flow, the pictures out of the latent space
        out = run_euler(self.vae, scheduler, shape, flow, generator=make_generator(rng, seed),
                        latents=latents, image=image, mask=mask_image, strength=strength,
                        callback=callback, output_type="latent", device=device)
        if output_type == "latent":
            return out
        with lent_steps(self):  # the VAE takes the step capture's scratch
            return decode(self.vae, out, device)


def _transformer_step(transformer: ChromaTransformer2DModel, packed: Tensor, states: Tensor,
                      inputs: Tensor, rotary: tuple[Tensor, Tensor], mask: MaskKey | None
                      ) -> Tensor:
    """The transformer's call of a step (StepReplay's captured function): the packed
    latents, the prompt's states, the timestep's approximator inputs and the rotary tables
    its inputs; the attention mask, read on the host, a static argument (`mask_key`)."""
    return transformer(packed, states, inputs, None, None, mask_of(mask), rotary=rotary)
