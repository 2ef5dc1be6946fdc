"""FLUX.1 text-to-image (schnell and dev), as diffusers' FluxPipeline draws it: CLIP-L's pooled
prompt and T5-XXL's states condition the FLUX transformer, which predicts the flow of packed
2x2 latent patches; FlowMatchEulerDiscreteScheduler steps it from noise; the 16-channel VAE
decodes. With the torch RNG, a seed gives diffusers' picture (`generator=torch.Generator(
"cpu").manual_seed(seed)`).

    pipe = FluxPipeline.from_pretrained("FLUX.1-schnell")
    images = pipe("a red circle", height=512, width=512, num_inference_steps=4, seed=7)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray, concatenate

from ...loaders.flow.flux_file import load_flux_file
from ...loaders.flow.gguf import load_flux_gguf
from ...loaders.formats.diffusers_folder import component_config
from ...models import AutoencoderKL, CLIPTextModel, FluxTransformer2DModel, T5EncoderModel
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.model_sampling import calculate_shift
from ...text.flow_emphasis import clip_ids, emphasize, t5_ids
from ...text.t5_tokenizer import T5Tokenizer
from ...text.tokenizer import CLIPTokenizer
from .flow_control import FlowControl, encode_map
from .flow_memory import load_network
from .flow_replay import StepReplay, lent_steps
from .flux1_memory import to_host
from .start import StepCallback, check_call, decode, flow_schedule, load_parts, run_euler

__all__ = ["FluxPipeline", "pack_latents", "unpack_latents"]


def pack_latents(latents: np.ndarray) -> np.ndarray:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): each 2x2 patch one token, channels outermost.
    diffusers: `FluxPipeline._pack_latents`."""
    b, c, h, w = latents.shape
    patches = latents.reshape(b, c, h // 2, 2, w // 2, 2).transpose(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: np.ndarray, height: int, width: int) -> np.ndarray:
    """pack_latents' inverse for latents of height x width. diffusers: `_unpack_latents`."""
    b, _, width4 = tokens.shape
    c = width4 // 4
    patches = tokens.reshape(b, height // 2, width // 2, c, 2, 2).transpose(0, 3, 1, 4, 2, 5)
    return patches.reshape(b, c, height, width)


def image_ids(rows: int, columns: int) -> np.ndarray:
    """(rows * columns, 3) rotary positions of the latent patches: (0, row, column)."""
    ids = np.zeros((rows, columns, 3), np.float32)
    ids[..., 1] = np.arange(rows)[:, None]
    ids[..., 2] = np.arange(columns)[None, :]
    return ids.reshape(-1, 3)


class FluxPipeline:
    """FLUX.1 txt2img on gpustd. Components as diffusers names them; `scheduler_config` is the
    folder's `scheduler/scheduler_config.json` (schnell: shift 1; dev: use_dynamic_shifting)."""

    def __init__(self, *, transformer: FluxTransformer2DModel, vae: AutoencoderKL,
                 text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 text_encoder_2: T5EncoderModel, tokenizer_2: T5Tokenizer,
                 scheduler_config: dict[str, Any], modules: Sequence[str] = ()) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.scheduler_config = dict(scheduler_config)
        self.modules = list(modules)  # the stems of the text encoder files used
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        # what every prompt's (states, pooled) pass through, as FLUX Redux's picture tokens
        # join them (diffusion.pipelines.flow.redux); None: the prompt's own
        self.prompt_prior: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None
        # the transformer's step, replayed in the plain memory mode (flow_replay)
        self.step_replay = StepReplay(_transformer_step)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        transformer_file: str | Path | None = None,
                        text_encoder_files: Sequence[str | os.PathLike[str]] = (),
                        offload: bool = False) -> FluxPipeline:
        """Load a FLUX diffusers folder (`load_flow_folder`), or a single file without one
        (BFL's or ComfyUI's; `load_flow_file`), onto `device` in `dtype`.
        `transformer_file`: BFL's single-file transformer (`flux1-dev.safetensors`, read by
        `load_flux_file`; or city96's `flux1-dev-Q8_0.gguf`, kept quantized by
        `load_flux_gguf`, as `path` may be too) in place of the folder's transformer/, which
        may then be absent; the folder's transformer config, when present, gives its
        `axes_dims_rope`.
        `text_encoder_files`: t5xxl / clip_l single files in place of the folder's
        (diffusion.loaders.flow.text_encoder_file); for a single file, what it lacks (the VAE
        `ae.safetensors` too). Without a tokenizer folder the bundled tokenizers are used.
        `offload`: each network goes to host memory as soon as it is loaded, for a memory mode
        to bring in as it runs (flux1_memory)."""
        weights, modules = load_parts(path, "flux", variant=variant,
                                      transformer_file=transformer_file,
                                      text_encoder_files=text_encoder_files)
        device = device or default_device()
        place = {"dtype": dtype, "device": device}

        transformer = weights.transformer
        file = transformer_file or (path if transformer is None else None)
        if file is not None:
            axes = (component_config(path, "transformer") or {}).get("axes_dims_rope")
            config = {"axes_dims_rope": axes} if axes else None
            if Path(file).suffix.lower() == ".gguf":
                model = load_flux_gguf(file, config=config, to_host=offload, **place)
            else:
                transformer = load_flux_file(file, config=config)
        # every model built deferred (gpustd.nn.deferred, in load_network): a parameter takes
        # GPU memory when its values arrive, so a GGUF T5 loads at its quantized size, never
        # its float size first; with `offload` each goes to host memory once loaded
        load = partial(load_network, device=device, offload_to_host=offload)
        tokenizer_dirs = weights.tokenizer_dirs
        clip, t5 = weights.text_encoder, weights.text_encoder_2
        text_encoder = load(lambda: CLIPTextModel(clip.config, **place), clip)
        # a GGUF T5's matrices stay quantized (city96's t5-v1_1-xxl-encoder-Q8_0.gguf)
        text_encoder_2 = load(lambda: T5EncoderModel(t5.config, **place), t5)
        if transformer is not None:
            model = load(lambda: FluxTransformer2DModel(transformer.config, **place),
                         transformer)
        else:  # the GGUF's, loaded above
            to_host(model, device, offload)
        return cls(
            transformer=model,
            vae=load(lambda: AutoencoderKL(weights.vae.config, **place), weights.vae),
            text_encoder=text_encoder,
            tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dirs.get("tokenizer")),
            text_encoder_2=text_encoder_2,
            tokenizer_2=T5Tokenizer(tokenizer_dirs.get("tokenizer_2")),
            scheduler_config=weights.scheduler_config, modules=modules)

    def encode_prompt(self, prompts: Sequence[str], max_sequence_length: int = 512
                      ) -> tuple[Tensor, Tensor]:
        """(T5 states (B, max_sequence_length, 4096), CLIP's pooled output (B, 768)), in the
        transformer's dtype, through `prompt_prior` where one is set; the prompts' emphasis
        weighs T5's states as Forge weighs them (text.flow_emphasis). diffusers:
        `FluxPipeline.encode_prompt(...)[:2]` for prompts without emphasis."""
        dtype = self.transformer.x_embedder.weight.dtype
        _, pooled = self.text_encoder.forward_pooled(clip_ids(self.tokenizer, prompts).ids)
        t5 = t5_ids(self.tokenizer_2, prompts, max_sequence_length)
        states = emphasize(self.text_encoder_2(t5.ids), t5)
        if self.prompt_prior is not None:
            return self.prompt_prior(states.astype(dtype), pooled.astype(dtype))
        return states.astype(dtype), pooled.astype(dtype)

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 3.5, max_sequence_length: int = 512,
                 cache: StepCache | None = None, control: FlowControl | None = None,
                 control_latents: np.ndarray | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """The transformer as `flow(x, t)` for `prompts` at height x width: x (B, C, h, w)
        float32 latents, t the scheduler's timestep (0..1000), the predicted flow back
        unpacked (float32); also the latents' shape and the schedule's `mu` (dev's shift by
        the number of image tokens, None for a constant shift). `cache`: the generation's
        step cache, of which this flow takes a branch of its own. `control`: ControlNet units
        (their maps encoded here by the posterior's mean unless `control.encode` drew them).
        `control_latents`: FLUX.1 Canny/Depth dev's map as latents (`encode_map`: (B, C, h,
        w)), concatenated to the packed latents' channels at every call."""
        self.check_control_image(control_latents is not None)
        return self.flow_with(prompts, height=height, width=width,
                              guidance_scale=guidance_scale,
                              max_sequence_length=max_sequence_length, cache=cache,
                              control=control, extra=control_latents)

    def flow_with(self, prompts: Sequence[str], *, height: int, width: int,
                  guidance_scale: float, max_sequence_length: int, cache: StepCache | None,
                  control: FlowControl | None, extra: np.ndarray | None, packed: bool = False,
                  references: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """`velocity` with `extra` input channels beside every call's packed noise latents:
        latents (B, C, h, w) packed here, or already packed tokens (1 or B, N, C) where
        `packed` (FLUX.1 Fill's masked picture and mask); the latents keep the transformer's
        output channels / 4. `references`: packed tokens (1, N, C) and their ids (N, 3) that
        ride after the noise tokens in every call, their prediction dropped (FLUX.1
        Kontext's reference picture)."""
        scale = self.vae_scale_factor * 2
        if height < scale or width < scale:
            raise ValueError(f"height and width must be at least {scale}, got {height}x{width}")
        config = self.transformer.config
        device = self.transformer.x_embedder.weight.device
        dtype = self.transformer.x_embedder.weight.dtype
        states, pooled = self.encode_prompt(prompts, max_sequence_length)
        batch = len(prompts)
        h, w = 2 * (int(height) // scale), 2 * (int(width) // scale)
        guidance = (np.full(batch, guidance_scale, np.float32)
                    if config["guidance_embeds"] else None)
        ids = image_ids(h // 2, w // 2)
        after = None if references is None else np.repeat(references[0], batch, 0)
        rotary = self.transformer.rotary(np.zeros((states.shape[1], 3), np.float32),
                                         ids if references is None
                                         else np.concatenate([ids, references[1]]))
        branch = None if cache is None else cache.branch()
        if control is not None and not control.encoded:
            control.encode(self.vae, batch=batch, width=w * self.vae_scale_factor,
                           height=h * self.vae_scale_factor, generator=None, pack=pack_latents,
                           dtype=dtype, device=device)

        if extra is not None:
            tokens = extra if packed else pack_latents(extra)
            extra = np.ascontiguousarray(np.broadcast_to(tokens, (batch, *tokens.shape[1:])))
        concat = None if extra is None else asarray(extra, dtype=dtype, device=device)
        # replayed unless a step cache (it decides on the host) or ControlNets (their
        # residuals a call of their own) take part: bound once a generation
        step = (self.step_replay.step(self.transformer) if cache is None and control is None
                else None)
        embedded = None if guidance is None else asarray(guidance, device=device)

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            timestep = np.full(batch, np.float32(t) / np.float32(1000), np.float32)
            tokens = pack_latents(x)
            if after is not None:
                tokens = np.concatenate([tokens, after], axis=1)
            packed = asarray(tokens, dtype=dtype, device=device)
            if concat is not None:  # Flux Tools' map, Fill's picture and mask: more channels
                packed = concatenate([packed, concat], axis=2)
            if step is not None:
                out = step(packed, states, pooled, asarray(timestep, device=device), embedded,
                           rotary)
            else:
                residuals = None if control is None else control.residuals(
                    packed, states, pooled, timestep, img_ids=ids,
                    guidance_scale=guidance_scale,
                    blocks=len(self.transformer.transformer_blocks))
                out = self.transformer(packed, states, pooled, timestep, None, None, guidance,
                                       rotary=rotary, cache=branch, control=residuals)
            predicted = out.numpy().astype(np.float32)
            return unpack_latents(predicted if after is None else predicted[:, :len(ids)], h, w)

        mu = calculate_shift((h // 2) * (w // 2), self.scheduler_config)
        channels = (config["in_channels"] - self.control_channels) // 4
        return flow, (batch, channels, h, w), mu

    @property
    def control_channels(self) -> int:
        """The packed input channels that take a control map's latents: FLUX.1 Canny / Depth
        dev's (Flux Tools: in_channels 128, out_channels 64), 0 for the other FLUX models."""
        config = self.transformer.config
        return int(config["in_channels"] - (config.get("out_channels") or config["in_channels"]))

    def check_control_image(self, given: bool) -> None:
        """ValueError in one line where a control image is missing (FLUX.1 Canny / Depth
        dev) or given to a model that takes none."""
        if given and not self.control_channels:
            raise ValueError("this FLUX.1 model takes no control image in its input (FLUX.1 "
                             "Canny / Depth dev do); give ControlNet units instead")
        if self.control_channels and not given:
            raise ValueError("FLUX.1 Canny / Depth dev needs its control image (the canny "
                             "or depth map it follows): pass control_image= to FluxPipeline "
                             "(the CLI: --control-image; the server: a unit with model None)")

    def __call__(self, prompt: str | Sequence[str], *, height: int = 1024, width: int = 1024,
                 num_inference_steps: int = 28, guidance_scale: float = 3.5, seed: int = 0,
                 rng: str = "torch", max_sequence_length: int = 512,
                 latents: np.ndarray | None = None, image: Any = None, mask_image: Any = None,
                 strength: float = 0.6, callback: StepCallback | None = None,
                 output_type: str = "np", cache: StepCache | None = None,
                 control: FlowControl | None = None, control_image: Any = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 16, H/8, W/8) ("latent"). `guidance_scale` is
        dev's distilled guidance (ignored by schnell, which embeds none). `seed` and `rng`
        ("torch": torch's CPU generator, as diffusers; "numpy") draw the starting noise unless
        `latents` (B, 16, H/8, W/8) is given. `image` (PIL or HxWx3 uint8; with `mask_image`,
        white = repaint) starts from that picture at `strength`. `callback(done, total,
        latents)` after every step (False stops); `cache`: step caching (`velocity`);
        `control`: ControlNet units (their maps drawn from the seed's generator first, as
        FluxControlNetPipeline(control_image=, controlnet_conditioning_scale=,
        control_guidance_start=, control_guidance_end=, control_mode=) draws them);
        `control_image`: FLUX.1 Canny / Depth dev's map (uint8 HxWx3, fitted by "Crop and
        Resize"), drawn from the generator first too, as FluxControlPipeline(control_image=)
        draws it.
        diffusers: `FluxPipeline(prompt, height=, width=, num_inference_steps=,
        guidance_scale=, generator=torch.Generator().manual_seed(seed),
        output_type="np").images`; with `image`, FluxImg2ImgPipeline's
        (and `mask_image`, FluxInpaintPipeline's) call with `strength=`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        device = self.transformer.x_embedder.weight.device
        generator = make_generator(rng, seed)
        if control is not None:  # the control maps' draws come before the noise's
            scale = 2 * self.vae_scale_factor
            control.encode(self.vae, batch=len(prompts) if latents is None else len(latents),
                           width=width // scale * scale, height=height // scale * scale,
                           generator=generator, pack=pack_latents,
                           dtype=self.transformer.x_embedder.weight.dtype, device=device)
        concat = None
        if control_image is not None:
            self.check_control_image(True)
            scale = 2 * self.vae_scale_factor
            concat = encode_map(self.vae, control_image,
                                batch=len(prompts) if latents is None else len(latents),
                                width=width // scale * scale, height=height // scale * scale,
                                generator=generator)
        # 1. conditioning, as a function of the latents and the timestep
        flow, shape, mu = self.velocity(prompts, height=height, width=width,
                                        guidance_scale=guidance_scale,
                                        max_sequence_length=max_sequence_length, cache=cache,
                                        control=control, control_latents=concat)
        # 2. the schedule: sigmas 1 .. 1/n, shifted (dev: by the number of image tokens)
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu)
        # 3. the start (noise, or the init image noised to the first kept sigma), Euler steps
        # along the flow, the pictures out of the transformer's latent space
        out = run_euler(self.vae, scheduler, shape, flow, generator=generator,
                        latents=latents, image=image, mask=mask_image, strength=strength,
                        callback=callback, output_type="latent", device=device)
        if output_type == "latent":
            return out
        with lent_steps(self):  # the VAE takes the step capture's scratch
            return decode(self.vae, out, device)


def _transformer_step(transformer: FluxTransformer2DModel, packed: Tensor, states: Tensor,
                      pooled: Tensor, timestep: Tensor, guidance: Tensor | None,
                      rotary: tuple[Tensor, Tensor]) -> Tensor:
    """The transformer's call of a step (StepReplay's captured function): the packed latents,
    the prompt's states and pooled vector, the timesteps and guidance (float32 Tensors) and
    the rotary tables of the size its inputs."""
    return transformer(packed, states, pooled, timestep, None, None, guidance, rotary=rotary)
