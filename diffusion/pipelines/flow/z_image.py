"""Z-Image (Turbo and Base), as diffusers' ZImagePipeline draws it (and its Img2Img and
Inpaint pipelines, from an init image: diffusion.pipelines.flow.start.FlowStart): the prompt
in Qwen3's chat template, Qwen3's second-to-last hidden states of its tokens (padding
dropped) condition the Z-Image transformer; FlowMatchEulerDiscreteScheduler steps the
negated model output from noise over sigmas 1 .. 1/n, shifted as the folder's scheduler
says; FLUX's 16-channel VAE decodes. CFG as diffusers': `pos + g * (pos - neg)` for
`guidance_scale` g > 0 (Turbo runs at 0, without a negative pass). With the torch RNG, a seed
gives diffusers' picture (`generator=torch.Generator("cpu").manual_seed(seed)`). ControlNet
units (alibaba-pai's Fun Union) run as ZImageControlNetPipeline runs them (flow_control).

    pipe = ZImagePipeline.from_pretrained("Z-Image-Turbo")
    images = pipe("a red circle", height=1024, width=1024, num_inference_steps=8,
                  guidance_scale=0.0, seed=7)
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

from ...loaders.flow.text_encoder_file import module_stem
from ...loaders.formats.diffusers_folder import component_config
from ...loaders.sd.vae_file import load_vae
from ...loaders.vae_kind import require_vae
from ...loaders.z_image import load_llm_file, load_zimage_file, load_zimage_folder
from ...models import AutoencoderKL
from ...models.llm import LLMTextModel
from ...models.step_cache import StepCache
from ...models.z_image import ZImageTransformer2DModel
from ...noise.rng import make_generator
from ...sampling.model_sampling import calculate_shift
from ...text.llm_tokenizer import LLMTokenizer, qwen3_chat_prompt
from .flow_control import FlowControl
from .flow_memory import load_network
from .flow_replay import StepReplay, lent_steps
from .start import (
    StepCallback,
    check_call,
    check_sides,
    decode,
    flow_schedule,
    run_euler,
    single_files,
)

__all__ = ["ZImagePipeline"]

TEXT_LAYER = -2  # the hidden states Z-Image reads: Qwen3's second-to-last layer's output


class ZImagePipeline:
    """Z-Image txt2img on gpustd. Components as diffusers names them; `scheduler_config` is
    the folder's `scheduler/scheduler_config.json` (Turbo: a constant shift of 3)."""

    def __init__(self, *, transformer: ZImageTransformer2DModel, vae: AutoencoderKL,
                 text_encoder: LLMTextModel, tokenizer: LLMTokenizer,
                 scheduler_config: dict[str, Any], modules: Sequence[str] = ()) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.modules = list(modules)
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        # the transformer's step, replayed in the plain memory mode (flow_replay)
        self.step_replay = StepReplay(_transformer_step)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        transformer_file: str | os.PathLike[str] | None = None,
                        text_encoder_files: Sequence[str | os.PathLike[str]] = (),
                        offload: bool = False) -> ZImagePipeline:
        """Load a Z-Image diffusers folder (`load_zimage_folder`) onto `device` in `dtype`;
        `transformer_file`: a single-file transformer in the original layout (ComfyUI's
        `z_image_turbo_bf16.safetensors`, a fine-tune, or a GGUF of one, kept quantized;
        `load_zimage_file`) in place of the folder's, whose config gives the rotary
        settings; `text_encoder_files`: a Qwen3 text encoder file (ComfyUI's
        `qwen_3_4b.safetensors`; `load_llm_file`) in place of the folder's text_encoder/,
        which need then hold no weights; `offload`: each network goes to host memory as soon
        as it is loaded (the text encoder before the transformer loads), for a memory mode to
        bring in as it runs (flow_memory)."""
        files, skip = single_files("Z-Image", "its Qwen3", transformer_file, text_encoder_files)
        weights = load_zimage_folder(path, variant=variant, skip=skip)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        if transformer_file is not None:
            transformer = load_zimage_file(transformer_file,
                                           config=component_config(path, "transformer"))
        if files:
            text_encoder = load_llm_file(files[0], config=component_config(path, "text_encoder"))
        assert transformer is not None and text_encoder is not None
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        # the text encoder first: with `offload` it has left the GPU when the transformer loads
        encoder = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        return cls(
            # a GGUF's quantized matrices kept as blocks, fused q/k/v rows cut from them
            transformer=load(lambda: ZImageTransformer2DModel(transformer.config, **place),
                             transformer, slices=True),
            vae=load(lambda: AutoencoderKL(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config,
            modules=[module_stem(f) for f in files])

    def use_vae_file(self, path: str | os.PathLike[str]) -> None:
        """Decode with FLUX's VAE in the file `path` (`ae.safetensors`, Black Forest Labs'
        names or diffusers'; diffusion.loaders.sd.vae_file.load_vae), in the place, dtype
        and config of the folder's. WeightsError in one line for another family's VAE."""
        require_vae(path, "2d", int(self.vae.config["latent_channels"]), model="Z-Image",
                    usual="FLUX's ae.safetensors")
        weight = self.vae.decoder.conv_in.weight
        self.vae = load_vae(path, dtype=weight.dtype, device=weight.device,
                            config=self.vae.config)

    def encode_prompt(self, prompts: Sequence[str], max_sequence_length: int = 512
                      ) -> list[Tensor]:
        """Each prompt's caption states (L_i, hidden) float32: Qwen3's hidden states[-2] of
        its chat-templated tokens, the padding dropped. diffusers:
        `ZImagePipeline._encode_prompt`. Right-padded batches are padded to their longest
        prompt only (the causal encoder's states of the kept tokens are the same)."""
        return self.encode_texts([qwen3_chat_prompt(p, enable_thinking=True) for p in prompts],
                                 max_sequence_length)

    def encode_texts(self, texts: Sequence[str], max_sequence_length: int = 512
                     ) -> list[Tensor]:
        """Each text's caption states (L_i, hidden) float32, the texts already templated
        (`encode_prompt`; Z-Image Omni's caption pieces)."""
        padding = "longest" if self.tokenizer.padding_side == "right" else "max_length"
        ids, mask = self.tokenizer(texts, max_sequence_length, padding=padding)
        states = self.text_encoder.hidden_states(ids, mask, layer=TEXT_LAYER)
        captions = []
        for row, keep in enumerate(mask.astype(bool)):
            kept = np.flatnonzero(keep)
            if len(kept) == 0 or kept[-1] - kept[0] + 1 != len(kept):
                raise ValueError("a prompt's tokens must be one run (left or right padding)")
            one = take_slice(states, row, row + 1, axis=0)
            captions.append(take_slice(one, int(kept[0]), int(kept[-1]) + 1, axis=1)
                            .reshape(len(kept), -1))
        return captions

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 0.0, negative_prompt: str | Sequence[str] = "",
                 max_sequence_length: int = 512, cache: StepCache | None = None,
                 control: FlowControl | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """The model as `flow(x, t)` for `prompts` at height x width: x (B, C, h, w) float32
        latents, t the scheduler's timestep (0..1000), the flow the scheduler steps along
        (the negated model output, with diffusers' CFG when `guidance_scale` > 0); also the
        latents' shape and the schedule's `mu` (used where the scheduler shifts by size).
        `cache`: the generation's step cache, of which this flow takes a branch (one: CFG's
        rows are one call and share it, as in diffusers' batch). `control`: ControlNet units,
        their maps encoded here (the posterior's mean, as ZImageControlNetPipeline's
        `sample_mode="argmax"`) unless already."""
        scale = self.vae_scale_factor * 2
        if height < scale or width < scale:
            raise ValueError(f"height and width must be at least {scale}, got {height}x{width}")
        batch = len(prompts)
        captions = self.encode_prompt(prompts, max_sequence_length)
        guided = guidance_scale > 0
        if guided:
            negatives = ([negative_prompt] * batch if isinstance(negative_prompt, str)
                         else list(negative_prompt))
            captions += self.encode_prompt(negatives, max_sequence_length)
        h, w = 2 * (int(height) // scale), 2 * (int(width) // scale)
        dtype, device = self.transformer.dtype, self.transformer.device
        g = np.float32(guidance_scale)
        branch = None if cache is None else cache.branch()
        if control is not None and not control.encoded:
            control.encode(self.vae, batch=batch, width=w * self.vae_scale_factor,
                           height=h * self.vae_scale_factor, generator=None,
                           pack=lambda latent: latent, dtype=dtype, device=device)

        # replayed unless a step cache (it decides on the host) or ControlNets (their blocks
        # run inside the call) take part: bound once a generation
        step = (self.step_replay.step(self.transformer) if cache is None and control is None
                else None)

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            timestep = (np.float32(1000) - np.float32(t)) / np.float32(1000)
            latents = np.concatenate([x, x]) if guided else x
            times = np.full(len(latents), timestep, np.float32)
            if step is not None:
                out = step(asarray(latents, dtype=dtype, device=device),
                           asarray(times, dtype=np.float32, device=device), captions)
            else:
                hints = None if control is None else control.block_hints(times,
                                                                          self.transformer)
                out = self.transformer(asarray(latents, dtype=dtype, device=device), times,
                                       captions, cache=branch, control=hints)
            pred = out.numpy().astype(np.float32)
            if guided:
                positive, negative = pred[:batch], pred[batch:]
                pred = positive + g * (positive - negative)
            return -pred

        mu = calculate_shift((h // 2) * (w // 2), self.scheduler_config)
        channels = self.transformer.config["in_channels"]
        return flow, (batch, channels, h, w), mu

    def __call__(self, prompt: str | Sequence[str], *, height: int = 1024, width: int = 1024,
                 num_inference_steps: int = 8, guidance_scale: float = 0.0,
                 negative_prompt: str | Sequence[str] = "", seed: int = 0, rng: str = "torch",
                 max_sequence_length: int = 512, latents: np.ndarray | None = None,
                 image: Any = None, mask_image: Any = None, strength: float = 0.6,
                 callback: StepCallback | None = None, output_type: str = "np",
                 cache: StepCache | None = None, control: FlowControl | None = None
                 ) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 16, H/8, W/8) ("latent"). `guidance_scale`:
        diffusers' (0 for Turbo; CFG above 0, against `negative_prompt`). `seed` and `rng`
        ("torch", as diffusers; "numpy") draw the starting noise unless `latents` is given.
        `image` (PIL or HxWx3 uint8; with `mask_image`, white = repaint) starts from that
        picture at `strength`. `callback(done, total, latents)` after every step (False
        stops); `cache`: step caching and `control`: ControlNet units (`velocity`; as
        ZImageControlNetPipeline(control_image=, controlnet_conditioning_scale=)).
        diffusers: `ZImagePipeline(prompt,
        height=, width=, num_inference_steps=, guidance_scale=, negative_prompt=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`
        (cfg_normalization off, cfg_truncation 1: its defaults);
        with `image`, ZImageImg2ImgPipeline's (and `mask_image`, ZImageInpaintPipeline's)
        call with `strength=`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        check_sides(height, width, self.vae_scale_factor * 2, "Z-Image")
        # 1. conditioning, as a function of the latents and the timestep
        flow, shape, mu = self.velocity(prompts, height=height, width=width,
                                        guidance_scale=guidance_scale,
                                        negative_prompt=negative_prompt,
                                        max_sequence_length=max_sequence_length, cache=cache,
                                        control=control)
        # 2. the schedule: sigmas 1 .. 1/n, shifted (Turbo: by the constant shift)
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu)
        # 3. the start (noise, or the init image noised to the first kept sigma), Euler steps
        # along the flow, the pictures out of the latent space
        out = run_euler(self.vae, scheduler, shape, flow, generator=make_generator(rng, seed),
                        latents=latents, image=image, mask=mask_image, strength=strength,
                        callback=callback, output_type="latent",
                        device=self.transformer.device)
        if output_type == "latent":
            return out
        with lent_steps(self):  # the VAE takes the step capture's scratch
            return decode(self.vae, out, self.transformer.device)


def _transformer_step(transformer: ZImageTransformer2DModel, latents: Tensor, times: Tensor,
                      captions: list[Tensor]) -> Tensor:
    """The transformer's call of a step (StepReplay's captured function): the latents, the
    timesteps and every caption's states its inputs."""
    return transformer(latents, times, captions)
