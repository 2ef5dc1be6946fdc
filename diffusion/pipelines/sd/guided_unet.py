"""The UNet family's guided model: the UNet's unconditional and conditional outputs for one
input (`GuidedUNet`), what `CFGDenoiser` (diffusion.sampling.kdiffusion) and the timestep loops
call; SDXL's added conditioning (`AddedContext`); one UNet call on device tensors
(`unet_call`, what a capture records).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpustd import Tensor, asarray, concatenate

from ...sampling.guidance import Weights, part_rows

__all__ = ["AddedContext", "Context", "Contexts", "GuidedUNet", "unet_call"]


@dataclass(frozen=True)
class AddedContext:
    """SDXL's conditioning of a batch: the cross-attention states `hidden` (B, L, D) and the
    UNet's added inputs, `text_embeds` (B, P) (the pooled text embedding) and `time_ids`
    (B, n) (the size/crop/target or aesthetic-score micro-conditioning); diffusers'
    `encoder_hidden_states` and `added_cond_kwargs`."""

    hidden: Tensor
    text_embeds: Tensor
    time_ids: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.hidden.shape)

    @property
    def device(self) -> Any:
        return self.hidden.device


Context = Tensor | AddedContext
# step -> (uncond context or None when unguided, cond context), each (B, L, D) on the GPU;
# with Weights, cond has a row per prompt part: (sum of the parts, L, D)
Contexts = Callable[[int], tuple[Context | None, Context]]
UNet = Callable[..., Tensor]


def unet_call(unet: UNet, x: Tensor, timesteps: Tensor, hidden: Tensor,
              text_embeds: Tensor | None = None,
              time_ids: tuple[tuple[float, ...], ...] | None = None,
              control: dict[str, Any] | None = None) -> Tensor:
    """One UNet call on device tensors (what GuidedUNet's step runs): x (B, C, H, W),
    timesteps (B,), hidden (B, L, D); SDXL's text_embeds (B, P) and time_ids (B rows);
    `control`: ControlNet / T2I-Adapter residuals by the UNet's keyword names (device
    tensors, so a replay takes each step's own; diffusion.pipelines.control)."""
    extra = control or {}
    if text_embeds is None:
        return unet(x, timesteps, hidden, **extra)
    added = {"text_embeds": text_embeds, "time_ids": np.asarray(time_ids, np.float32)}
    return unet(x, timesteps, hidden, added_cond=added, **extra)


class GuidedUNet:
    """The UNet's unconditional and conditional outputs for one input, as the WebUI gets them.

    `unet_step` runs `unet_call` bound to the UNet, captured (gpustd.capture, outputs not copied; a
    StableDiffusion keeps one across generations, diffusion.pipelines.sd.capture): recorded on the
    first step and replayed on the others, a few wgpu calls per dispatch instead of the ops' Python.
    What changes per step (latents, timestep, context under prompt editing) travels as device
    tensors. `contexts(step)` gives the text conditioning of a step (prompt editing changes it
    between steps). Uncond and cond run as one UNet batch when their lengths agree, else one after
    the other (the WebUI without `pad_cond_uncond`); without guidance only cond runs. `weights`
    (composable diffusion): each image's input runs once per part of its prompt, against that part's
    cond row; they always run with the uncond (see `combine`). `control` (a
    diffusion.pipelines.control.Control) adds its units' residuals to every call, told which image
    of the batch each row is (a unit's map per image reaches each of the image's rows, uncond and
    parts alike). `reference` (a diffusion.pipelines.reference.ReferenceInjection): its
    reference units run the UNet itself (not the capture) at the steps they act.
    `colorfix` (a diffusion.pipelines.colorfix.ColorFixHook): tile_colorfix's correction of
    every call's output."""

    def __init__(self, unet_step: UNet, contexts: Contexts, *, dtype: Any,
                 control: Any = None, weights: Weights | None = None,
                 reference: Any = None, colorfix: Any = None) -> None:
        self.unet_step = unet_step
        self.reference = reference
        self.colorfix = colorfix
        self.contexts = contexts
        self.dtype = dtype
        self.control = control
        self.weights = weights
        self._step = 0
        self._joined: tuple[int, int, Context] | None = None

    def __call__(self, model_in: np.ndarray, t: float, step: int
                 ) -> tuple[np.ndarray | None, np.ndarray]:
        """(uncond output or None, cond output) at timestep `t` of WebUI step `step`; with
        `weights` the cond output has a row per part."""
        uncond, cond = self.contexts(step)
        self._step = step
        if self.weights is not None and uncond is None:
            raise ValueError("composable diffusion (a prompt's AND parts or weights) "
                             "guides against the negative prompt: give its context")
        cond_in = part_rows(model_in, self.weights)
        # the image of the batch each row is, for control units with one map per image
        images = np.arange(len(model_in))
        cond_images = part_rows(images, self.weights)
        if uncond is None:
            return None, self._run(cond_in, t, cond, images=cond_images)
        if uncond.shape[1] == cond.shape[1]:
            rows = len(model_in)
            both = self._run(np.concatenate([model_in, cond_in]), t,
                             self._joined_context(uncond, cond), uncond_rows=rows,
                             images=np.concatenate([images, cond_images]))
            return both[:rows], both[rows:]
        return (self._run(model_in, t, uncond, uncond_rows=len(model_in), images=images),
                self._run(cond_in, t, cond, images=cond_images))

    def _run(self, model_in: np.ndarray, t: float, context: Context, *,
             uncond_rows: int = 0, images: np.ndarray) -> np.ndarray:
        # cast here, not on the GPU: the GPU idles from one step's read-back to the next
        # step's first submit, and an eager cast is ~0.1 ms of that (the same bits: both
        # round float32 to nearest even)
        x = asarray(model_in.astype(np.float32).astype(self.dtype), device=context.device)
        timesteps = asarray(np.full(x.shape[0], t, np.float32), device=x.device)
        hidden, text_embeds, ids = context, None, None
        if isinstance(context, AddedContext):
            # time_ids are constant through a generation: a capture's (hashable) constant
            hidden, text_embeds = context.hidden, context.text_embeds
            ids = tuple(map(tuple, np.asarray(context.time_ids).tolist()))
        residuals = None if self.control is None else self.control.residuals(
            x, timesteps, hidden, self._step, uncond_rows=uncond_rows, images=images,
            text_embeds=text_embeds, time_ids=ids)
        if self.reference is not None and self.reference.acts(self._step):
            unet = self.reference.unet
            assert isinstance(hidden, Tensor)  # an AddedContext gave its hidden states above
            out = self.reference.run(
                lambda sample, control: unet_call(unet, sample, timesteps, hidden, text_embeds,
                                                  ids, residuals if control else None),
                x, t, step=self._step, uncond_rows=uncond_rows)
        elif residuals is not None:
            out = self.unet_step(x, timesteps, hidden, text_embeds, ids, residuals)
        elif text_embeds is not None:
            out = self.unet_step(x, timesteps, hidden, text_embeds, ids)
        else:
            out = self.unet_step(x, timesteps, hidden)
        if self.colorfix is not None:
            return self.colorfix(out.numpy().astype(np.float64), model_in, t,
                                 uncond_rows=uncond_rows)
        return out.numpy().astype(np.float64)

    def _joined_context(self, uncond: Context, cond: Context) -> Context:
        """[uncond; cond] on the GPU, joined once per distinct pair (not once per step)."""
        if self._joined is None or self._joined[:2] != (id(uncond), id(cond)):
            if isinstance(cond, AddedContext) and isinstance(uncond, AddedContext):
                joined: Context = AddedContext(
                    concatenate([uncond.hidden, cond.hidden]),
                    concatenate([uncond.text_embeds, cond.text_embeds]),
                    np.concatenate([uncond.time_ids, cond.time_ids]))
            else:
                joined = concatenate([uncond, cond])
            self._joined = (id(uncond), id(cond), joined)
        return self._joined[2]


