"""CogView4, as diffusers' CogView4Pipeline draws it: the prompt's GLM tokens padded on the
left to a multiple of 16 (the padding attended, as diffusers passes no mask), GLM-4's
second-to-last hidden states condition the CogView4 transformer, which predicts the flow of the
unpacked latents; classifier-free guidance with the negative prompt ("" when none) in its own
pass; FlowMatchEulerDiscreteScheduler over timesteps linspace(1000, 1, n) truncated to
integers, shifted by mu = sqrt(image tokens / base_image_seq_len) * max_shift + base_shift;
the 16-channel VAE decodes latents / scaling_factor (no shift). With the torch RNG a seed gives
diffusers' picture. A CogView4-6B-Control folder (CogView4ControlPipeline) loads here too and
takes its map as `control_image=` (cogview4_control).

    pipe = CogView4Pipeline.from_pretrained("CogView4-6B")
    images = pipe("a red circle", height=1024, width=1024, guidance_scale=3.5, seed=7)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ...loaders.cogview4 import load_cogview4_folder
from ...models import AutoencoderKL
from ...models.cogview4 import CogView4Transformer2DModel
from ...models.llm import LLMTextModel
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...text.llm_tokenizer import LLMTokenizer
from .cogview4_control import check_control, control_channels, encode_control
from .flow_memory import load_network
from .flow_replay import StepReplay
from .start import StepCallback, check_call, check_sides, flow_schedule, run_euler

__all__ = ["CogView4Pipeline", "cogview4_mu", "cogview4_sigmas"]

_MULTIPLE = 16  # the prompt's tokens padded on the left to a multiple of this


def cogview4_mu(image_seq_len: int, config: dict[str, Any]) -> float:
    """The schedule's shift: sqrt(image_seq_len / base_image_seq_len) * max_shift +
    base_shift. diffusers: `pipelines.cogview4.pipeline_cogview4.calculate_shift`."""
    ratio = (image_seq_len / config.get("base_image_seq_len", 256)) ** 0.5
    return ratio * config.get("max_shift", 0.75) + config.get("base_shift", 0.25)


def cogview4_sigmas(steps: int, config: dict[str, Any]) -> list[float]:
    """The unshifted sigmas: linspace(num_train_timesteps, 1, steps) truncated to integers,
    over num_train_timesteps, as CogView4Pipeline builds them."""
    train = config.get("num_train_timesteps", 1000)
    timesteps = np.linspace(train, 1.0, steps).astype(np.int64).astype(np.float32)
    return (timesteps / np.float32(train)).tolist()  # float32 values, exact as floats


class CogView4Pipeline:
    """CogView4 txt2img on gpustd. Components as diffusers names them; `scheduler_config` is
    the folder's `scheduler/scheduler_config.json`."""

    def __init__(self, *, transformer: CogView4Transformer2DModel, vae: AutoencoderKL,
                 text_encoder: LLMTextModel, tokenizer: LLMTokenizer,
                 scheduler_config: dict[str, Any], modules: Sequence[str] = ()) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.modules = list(modules)
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        # the transformer's step, replayed in the plain memory mode (flow_replay); a
        # signature per caption length: CFG's two passes at two sizes (hires)
        self.step_replay = StepReplay(_transformer_step, max_signatures=4)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> CogView4Pipeline:
        """Load a CogView4 diffusers folder (`load_cogview4_folder`) onto `device` in `dtype`;
        `offload`: each network goes to host memory once loaded (flow_memory)."""
        weights = load_cogview4_folder(path, variant=variant)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        assert transformer is not None and text_encoder is not None
        hidden = text_encoder.config["hidden_size"]
        wanted = transformer.config.get("text_embed_dim", 4096)
        if wanted != hidden:
            raise ValueError(f"the text encoder's states are {hidden} wide, the transformer "
                             f"reads {wanted}: CogView4 reads GLM-4-9B's (4096); give the "
                             "folder's own text encoder")
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        # diffusers decodes latents / scaling_factor alone: a shift_factor is not applied
        vae_config = {**weights.vae.config, "shift_factor": None}
        encoder = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        return cls(
            transformer=load(lambda: CogView4Transformer2DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKL(vae_config, **place), weights.vae),
            text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config)

    def encode_prompt(self, prompts: Sequence[str], max_sequence_length: int = 1024
                      ) -> Tensor:
        """The prompts' states (B, L, hidden) in the transformer's dtype: GLM's
        hidden_states[-2] of the tokens (padded to the longest on the tokenizer's side, then
        on the left to a multiple of 16 with the pad token), every place attended.
        diffusers: `CogView4Pipeline._get_glm_embeds`."""
        ids, _ = self.tokenizer(prompts, max_sequence_length, padding="longest")
        pad = -ids.shape[1] % _MULTIPLE
        ids = np.concatenate([np.full((len(ids), pad), self.tokenizer.pad_id, ids.dtype), ids],
                             axis=1)
        states = self.text_encoder.hidden_states(ids, None, layer=-2)
        return states.astype(self.transformer.proj_out.weight.dtype)

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 5.0, negative_prompt: str | Sequence[str] = "",
                 original_size: tuple[int, int] | None = None,
                 crops_coords_top_left: tuple[int, int] = (0, 0),
                 max_sequence_length: int = 1024, cache: StepCache | None = None,
                 control_latents: np.ndarray | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """The guided transformer as `flow(x, t)` for `prompts` at height x width: x (B, C,
        h, w) float32 latents, t the scheduler's timestep (0..1000), the flow (float32);
        guidance applies when guidance_scale > 1 (`negative_prompt` its own pass). Also the
        latents' shape and the schedule's mu. `cache`: the generation's step cache, of which
        each pass takes a branch (diffusers' "cond" and "uncond" contexts).
        `control_latents`: CogView4-6B-Control's map (`encode_control`: (1 or B, C, h, w)),
        concatenated to the latents' channels at every call (cogview4_control)."""
        config = self.transformer.config
        check_control(config, control_latents is not None)
        weight = self.transformer.proj_out.weight
        batch, guided = len(prompts), guidance_scale > 1
        h, w = int(height) // self.vae_scale_factor, int(width) // self.vae_scale_factor
        sizes = {"original_size": [list(original_size or (height, width))] * batch,
                 "target_size": [[height, width]] * batch,
                 "crop_coords": [list(crops_coords_top_left)] * batch}
        passes = [self.encode_prompt(prompts, max_sequence_length)]
        if guided:
            negatives = ([negative_prompt] * batch if isinstance(negative_prompt, str)
                         else list(negative_prompt))
            passes.append(self.encode_prompt(negatives, max_sequence_length))
        branches = [None if cache is None else cache.branch() for _ in passes]
        # replayed unless a step cache decides on the host; the sizes static arguments, the
        # rotary tables of each caption length made (and kept) before any recording
        step = self.step_replay.step(self.transformer) if cache is None else None
        patch = self.transformer.config["patch_size"]
        for states in passes if step is not None else ():
            self.transformer.rotary(states.shape[1], h // patch, w // patch)
        statics = tuple(tuple(tuple(int(v) for v in s[0]) for s in sizes.values()))

        def predict(latents: Tensor, timestep: np.ndarray, states: Tensor,
                    branch: Any) -> np.ndarray:
            if step is not None:
                out = step(latents, states, asarray(timestep, device=weight.device), statics)
            else:
                out = self.transformer(latents, states, timestep, **sizes, cache=branch)
            return out.numpy().astype(np.float32)

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            if control_latents is not None:
                x = np.concatenate([x, np.broadcast_to(control_latents, x.shape)], axis=1)
            latents = asarray(x, dtype=weight.dtype, device=weight.device)
            timestep = np.full(batch, t, np.float32)
            preds = [predict(latents, timestep, states, branch)
                     for states, branch in zip(passes, branches)]
            if not guided:
                return preds[0]
            return (preds[1] + np.float32(guidance_scale) * (preds[0] - preds[1])).astype(
                np.float32)

        mu = cogview4_mu(h * w // patch ** 2, self.scheduler_config)
        channels = config["in_channels"] - control_channels(config)
        return flow, (batch, channels, h, w), mu

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | Sequence[str] = "",
                 height: int = 1024, width: int = 1024, num_inference_steps: int = 50,
                 guidance_scale: float = 5.0, original_size: tuple[int, int] | None = None,
                 crops_coords_top_left: tuple[int, int] = (0, 0), seed: int = 0,
                 rng: str = "torch", latents: np.ndarray | None = None, image: Any = None,
                 mask_image: Any = None, strength: float = 0.6,
                 callback: StepCallback | None = None, output_type: str = "np",
                 max_sequence_length: int = 1024, cache: StepCache | None = None,
                 control_image: Any = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 16, H/8, W/8) ("latent"). `seed` and `rng`
        ("torch", as diffusers; "numpy") draw the starting noise unless `latents` is given;
        `image` (with `mask_image`, white = repaint) starts from that picture at `strength`
        as FLUX's img2img and inpainting do (diffusers has no CogView4 img2img);
        `callback(done, total, latents)` after every step (False stops); `cache`: step
        caching; `control_image`: CogView4-6B-Control's map (uint8 HxWx3, fitted by "Crop and
        Resize"), its posterior drawn from a generator of its own seeded `seed`, as
        CogView4ControlPipeline(control_image=) draws it after torch.manual_seed(seed).
        diffusers:
        `CogView4Pipeline(prompt, negative_prompt=, height=, width=, num_inference_steps=,
        guidance_scale=, original_size=, crops_coords_top_left=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        check_sides(height, width, self.vae_scale_factor * self.transformer.config[
            "patch_size"], "CogView4")
        control = None if control_image is None else encode_control(
            self.vae, control_image, batch=len(prompts) if latents is None else len(latents),
            height=height, width=width, generator=make_generator(rng, seed))
        flow, shape, mu = self.velocity(
            prompts, height=height, width=width, guidance_scale=guidance_scale,
            negative_prompt=negative_prompt, original_size=original_size,
            crops_coords_top_left=crops_coords_top_left,
            max_sequence_length=max_sequence_length, cache=cache, control_latents=control)
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu,
                                  cogview4_sigmas(num_inference_steps, self.scheduler_config))
        return run_euler(self.vae, scheduler, shape, flow, generator=make_generator(rng, seed),
                         latents=latents, image=image, mask=mask_image, strength=strength,
                         callback=callback, output_type=output_type,
                         device=self.transformer.proj_out.weight.device, lender=self)


def _transformer_step(transformer: CogView4Transformer2DModel, latents: Tensor, states: Tensor,
                      timestep: Tensor, sizes: tuple[tuple[int, int], ...]) -> Tensor:
    """The transformer's call of a step (StepReplay's captured function): the latents, the
    prompt's states and the timesteps (a float32 Tensor) inputs; the original, target and crop
    sizes (one each, for every picture) static arguments."""
    batch = latents.shape[0]
    original, target, crop = ([list(size)] * batch for size in sizes)
    return transformer(latents, states, timestep, original, target, crop)
