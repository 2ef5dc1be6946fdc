"""Stable Diffusion 3 / 3.5 text-to-image, as diffusers' StableDiffusion3Pipeline draws it:
CLIP-L and OpenCLIP-G (penultimate states side by side, zero-padded to T5's width) followed by
T5-XXL's states condition the MMDiT, with both CLIPs' pooled projections; classifier-free
guidance; FlowMatchEulerDiscreteScheduler (shift 3); the 16-channel VAE decodes. With the
torch RNG a seed gives diffusers' picture.

    pipe = StableDiffusion3Pipeline.from_pretrained("stable-diffusion-3.5-medium")
    images = pipe("a red circle", height=1024, width=1024, guidance_scale=5.0, seed=7)
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

from ...loaders.flow.gguf import load_sd3_gguf
from ...loaders.flow.sd3_file import load_sd3_file
from ...models import AutoencoderKL, CLIPTextModel, SD3Transformer2DModel, T5EncoderModel
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.guidance import combine
from ...sampling.model_sampling import calculate_shift
from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ...text.flow_emphasis import clip_ids, emphasize, t5_ids
from ...text.t5_tokenizer import T5Tokenizer
from ...text.tokenizer import CLIPTokenizer
from .flow_control import FlowControl
from .flow_memory import load_network
from .flow_replay import StepReplay, lent_steps
from .flux1_memory import to_host
from .start import StepCallback, check_call, decode, load_parts, run_euler

__all__ = ["StableDiffusion3Pipeline"]


class StableDiffusion3Pipeline:
    """SD3/3.5 txt2img on gpustd. `text_encoder_3` and `tokenizer_3` may be None (a folder
    without T5): its states are then zeros, as diffusers does."""

    def __init__(self, *, transformer: SD3Transformer2DModel, vae: AutoencoderKL,
                 text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 text_encoder_2: CLIPTextModel, tokenizer_2: CLIPTokenizer,
                 text_encoder_3: T5EncoderModel | None, tokenizer_3: T5Tokenizer | None,
                 scheduler_config: dict[str, Any], modules: Sequence[str] = ()) -> None:
        self.transformer, self.vae = transformer, vae
        self.clips = ((text_encoder, tokenizer), (text_encoder_2, tokenizer_2))
        self.text_encoder_3, self.tokenizer_3 = text_encoder_3, tokenizer_3
        self.scheduler_config = dict(scheduler_config)
        self.modules = list(modules)  # the stems of the text encoder files used
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        # the transformer's step, replayed in the plain memory mode (flow_replay)
        self.step_replay = StepReplay(_transformer_step)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        transformer_file: str | Path | None = None,
                        text_encoder_files: Sequence[str | os.PathLike[str]] = (),
                        offload: bool = False) -> StableDiffusion3Pipeline:
        """Load an SD3/3.5 diffusers folder (`load_flow_folder`), or a single file without one
        (`sd3.5_large.safetensors`, ComfyUI's; `load_flow_file`), onto `device` in `dtype`.
        `transformer_file`: Stability's single file (`sd3.5_large.safetensors`, read by
        `load_sd3_file`; or city96's `.gguf`, kept quantized by `load_sd3_gguf`, as `path`
        may be too) in place of the folder's transformer/, which may then be absent.
        `text_encoder_files`: t5xxl / clip_l / clip_g single files in place of the folder's
        (diffusion.loaders.flow.text_encoder_file; T5 also where the folder has none); for a single
        file, what it lacks. Without tokenizer folders the bundled tokenizers are used.
        `offload`: each network goes to host memory as soon as it is loaded, for a memory mode
        to bring in as it runs (flux1_memory)."""
        weights, modules = load_parts(path, "sd3", variant=variant,
                                      transformer_file=transformer_file,
                                      text_encoder_files=text_encoder_files)
        place = {"dtype": dtype, "device": device or default_device()}
        transformer = weights.transformer
        file = transformer_file or (path if transformer is None else None)
        model = None
        if file is not None and Path(file).suffix.lower() == ".gguf":
            model = load_sd3_gguf(file, to_host=offload, **place)  # city96's, kept quantized
        elif file is not None:
            transformer = load_sd3_file(file)

        # every model built deferred (gpustd.nn.deferred, in load_network): a parameter takes
        # GPU memory when its values arrive, so a GGUF T5 loads at its quantized size, never
        # its float size first; with `offload` each goes to host memory once loaded
        device = place["device"]
        load = partial(load_network, device=device, offload_to_host=offload)

        def clip(component: Any) -> CLIPTextModel:
            return load(lambda: CLIPTextModel(component.config, with_projection=True, **place),
                        component)

        dirs = weights.tokenizer_dirs
        t5 = weights.text_encoder_3
        text_encoder, text_encoder_2 = clip(weights.text_encoder), clip(weights.text_encoder_2)
        # a GGUF T5's matrices stay quantized
        text_encoder_3 = None if t5 is None else load(lambda: T5EncoderModel(t5.config, **place),
                                                      t5)
        if model is None:
            assert transformer is not None  # skipped only when a file replaces it
            model = load(lambda: SD3Transformer2DModel(transformer.config, **place), transformer)
        else:  # the GGUF's, loaded above
            to_host(model, device, offload)
        return cls(
            transformer=model,
            vae=load(lambda: AutoencoderKL(weights.vae.config, **place), weights.vae),
            text_encoder=text_encoder,
            tokenizer=CLIPTokenizer.from_pretrained(dirs.get("tokenizer")),
            text_encoder_2=text_encoder_2,
            # OpenCLIP-G's tokenizer pads with "!", as SD3's tokenizer_2/ says
            tokenizer_2=(CLIPTokenizer.from_pretrained(dirs["tokenizer_2"])
                         if "tokenizer_2" in dirs else CLIPTokenizer(pad_token="!")),
            text_encoder_3=text_encoder_3,
            tokenizer_3=None if t5 is None else T5Tokenizer(dirs.get("tokenizer_3")),
            scheduler_config=weights.scheduler_config, modules=modules)

    def encode_prompt(self, prompts: Sequence[str], max_sequence_length: int = 256
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(states (B, 77 + max_sequence_length, joint_attention_dim), pooled (B, 2 x proj))
        float32; the prompts' emphasis weighs each encoder's states as Forge weighs them
        (text.flow_emphasis). diffusers: `StableDiffusion3Pipeline.encode_prompt` for one
        prompt set without emphasis."""
        prompts = list(prompts)
        width = self.transformer.config["joint_attention_dim"]
        # 1. each CLIP: penultimate states (hidden_states[-2], no final norm) and pooled
        states, pooled = [], []
        for encoder, tokenizer in self.clips:
            ids = clip_ids(tokenizer, prompts)
            hidden, pool = encoder.forward_pooled(ids.ids, clip_skip=1, final_norm=False)
            states.append(emphasize(hidden.numpy().astype(np.float32), ids))
            pooled.append(pool.numpy().astype(np.float32))
        clip_states = np.concatenate(states, axis=-1)[..., :width]  # torch's pad crops too
        clip_states = np.pad(clip_states, ((0, 0), (0, 0), (0, width - clip_states.shape[-1])))
        # 2. T5's states, or zeros without it
        if self.text_encoder_3 is None or self.tokenizer_3 is None:
            t5 = np.zeros((len(prompts), max_sequence_length, width), np.float32)
        else:
            weighted = t5_ids(self.tokenizer_3, prompts, max_sequence_length)
            t5 = emphasize(self.text_encoder_3(weighted.ids).numpy().astype(np.float32),
                           weighted)
        return np.concatenate([clip_states, t5], axis=1), np.concatenate(pooled, axis=-1)

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 negative_prompt: str = "", guidance_scale: float = 7.0,
                 max_sequence_length: int = 256, cache: StepCache | None = None,
                 control: FlowControl | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                            float | None]:
        """The guided transformer as `flow(x, t)` for `prompts` at height x width: x (B, C,
        h, w) float32 latents, t the scheduler's timestep (0..1000); guidance applies when
        guidance_scale > 1 (the `negative_prompt` for every row). Also the latents' shape and
        the schedule's `mu` (None unless the config shifts by picture size). `cache`: the
        generation's step cache, of which this flow takes a branch (one: CFG's rows are one
        call). `control`: ControlNet units (their maps encoded by the posterior's mean)."""
        config = self.transformer.config
        multiple = self.vae_scale_factor * config["patch_size"]
        if height % multiple or width % multiple or not height or not width:
            raise ValueError(f"height and width must be positive multiples of {multiple}, got "
                             f"{height}x{width}")
        device = self.transformer.proj_out.weight.device
        dtype = self.transformer.proj_out.weight.dtype
        batch, guided = len(prompts), guidance_scale > 1
        # 1. conditioning: [negative, positive] rows with guidance
        states, pooled = self.encode_prompt(prompts, max_sequence_length)
        if guided:
            negative = self.encode_prompt([negative_prompt] * batch, max_sequence_length)
            states = np.concatenate([negative[0], states])
            pooled = np.concatenate([negative[1], pooled])
        states_gpu = asarray(states, dtype=dtype, device=device)
        pooled_gpu = asarray(pooled, dtype=dtype, device=device)
        branch = None if cache is None else cache.branch()
        if control is not None and not control.encoded:
            control.encode(self.vae, batch=batch, width=width, height=height, generator=None,
                           pack=lambda latents: latents, dtype=dtype, device=device)

        # replayed unless a step cache (it decides on the host) or ControlNets (their
        # residuals a call of their own) take part: bound once a generation
        step = (self.step_replay.step(self.transformer) if cache is None and control is None
                else None)

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            model_in = np.concatenate([x, x]) if guided else x
            latents = asarray(model_in, dtype=dtype, device=device)
            timestep = np.full(len(model_in), t, np.float32)
            if step is not None:
                out = step(latents, states_gpu, pooled_gpu, asarray(timestep, device=device))
            else:
                residuals = None if control is None else control.sd3_residuals(
                    latents, states_gpu, pooled_gpu, timestep,
                    pos_embed=self.transformer.pos_embed)
                out = self.transformer(latents, states_gpu, pooled_gpu, timestep,
                                       cache=branch, control=residuals)
            out = out.numpy().astype(np.float32)
            if not guided:
                return out
            uncond, text = out[:batch], out[batch:]
            return combine(uncond, text, None, np.float32(guidance_scale))

        # 2. the latents' shape; the shift by picture size where the config says so
        shape = (batch, config["in_channels"], height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        tokens = (shape[2] // config["patch_size"]) * (shape[3] // config["patch_size"])
        mu = (calculate_shift(tokens, {"max_shift": 1.16, **self.scheduler_config})
              if self.scheduler_config.get("use_dynamic_shifting") else None)
        return flow, shape, mu

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str = "",
                 height: int = 1024, width: int = 1024, num_inference_steps: int = 28,
                 guidance_scale: float = 7.0, seed: int = 0, rng: str = "torch",
                 max_sequence_length: int = 256, latents: np.ndarray | None = None,
                 image: Any = None, mask_image: Any = None, strength: float = 0.6,
                 callback: StepCallback | None = None, output_type: str = "np",
                 cache: StepCache | None = None,
                 control: FlowControl | None = None) -> np.ndarray:
        """Pictures for `prompt`: float images in [0, 1], (B, height, width, 3) ("np"), or the
        final latents ("latent"). Guidance applies when guidance_scale > 1 (the
        `negative_prompt` for every row). `seed`/`rng`, `image`/`mask_image`/`strength` and
        `callback`, `cache` and `control` (ControlNet units, as
        StableDiffusion3ControlNetPipeline with its map's VAE draw at the posterior's mean) as
        FluxPipeline. diffusers: `StableDiffusion3Pipeline(prompt, negative_prompt=, height=,
        width=, num_inference_steps=, guidance_scale=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`; with
        `image`, StableDiffusion3Img2ImgPipeline's (and `mask_image`,
        StableDiffusion3InpaintPipeline's) call with `strength=`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        device = self.transformer.proj_out.weight.device
        # 1. conditioning, as a function of the latents and the timestep
        flow, shape, mu = self.velocity(prompts, height=height, width=width,
                                        negative_prompt=negative_prompt,
                                        guidance_scale=guidance_scale,
                                        max_sequence_length=max_sequence_length, cache=cache,
                                        control=control)
        # 2. the shifted schedule
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(num_inference_steps, mu=mu)
        # 3. the start (noise, or the init image noised to the first kept sigma), Euler steps
        # along the flow, the pictures out of the transformer's latent space
        out = run_euler(self.vae, scheduler, shape, flow, generator=make_generator(rng, seed),
                        latents=latents, image=image, mask=mask_image, strength=strength,
                        callback=callback, output_type="latent", device=device)
        if output_type == "latent":
            return out
        with lent_steps(self):  # the VAE takes the step capture's scratch
            return decode(self.vae, out, device)


def _transformer_step(transformer: SD3Transformer2DModel, latents: Tensor, states: Tensor,
                      pooled: Tensor, timestep: Tensor) -> Tensor:
    """The transformer's call of a step (StepReplay's captured function): the latents (CFG's
    rows together), the prompts' states and pooled vectors and the timesteps its inputs."""
    return transformer(latents, states, pooled, timestep)
