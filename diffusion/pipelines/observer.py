"""`Observer`: what a running generation tells its caller, and how the caller stops it.

The CLI's progress bar and the server's /progress implement it; `generate(request,
observer=...)` calls `step` after every sampling step of every pass (a hires fix's second pass
counts from 1 again, as in the WebUI). Before the steps, `on_begin` hands it the pipeline's
own decode (for previews by the model's VAE) and the model's latent space; the samplers
report each model call's prediction of the clean latents to `on_denoised` (what the WebUI's
live previews show): the WebUI's k-diffusion samplers, its timestep samplers (DDIM, PLMS,
UniPC) and the diffusers schedulers that compute one. The equivalent in diffusers:
`callback_on_step_end`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["Decode", "Observer", "Progress", "StepCallback", "from_callbacks"]

Progress = Callable[[int, int], None]  # (steps done, total steps)
# latents (B, C, h, w) -> their pictures (H, W, 3) uint8, as the generation's result has them
Decode = Callable[[np.ndarray], Sequence[np.ndarray]]
# (steps done, total steps, current latents) -> False to stop sampling early
StepCallback = Callable[[int, int, np.ndarray], bool | None]


class Observer:
    """Watches a generation. Subclasses override what they need; the base watches nothing."""

    def on_begin(self, decode: Decode, latent_space: str = "") -> None:
        """Before a picture's steps: `decode(latents)` makes pictures of latents as the
        pipeline decodes its result (the WebUI's "Full" live preview; each call is a whole
        VAE decode); `latent_space`: the model's (`Capabilities.latent_space`, which says how
        its latents read as colours)."""

    def on_denoised(self, x0: np.ndarray) -> None:
        """After each model call of the k-diffusion samplers (each step of the timestep
        samplers and of the schedulers that predict one), its prediction of the clean latents
        x0 (B, C, h, w) (for previews; copy them to keep them)."""

    def on_step(self, done: int, total: int, latents: np.ndarray) -> None:
        """After step `done` of `total`, with the current latents (B, C, h, w) (for
        previews; copy them to keep them)."""

    def interrupted(self) -> bool:
        """True stops sampling after the current step: the partly denoised latents are
        decoded (the WebUI's Interrupt / Skip)."""
        return False

    def step(self, done: int, total: int, latents: np.ndarray) -> bool:
        """What the sampling loops call: tell, then whether to go on."""
        self.on_step(done, total, latents)
        return not self.interrupted()


class _Callbacks(Observer):
    """The keyword form `generate(progress=..., on_step=...)` as an Observer."""

    def __init__(self, progress: Progress | None, on_step: StepCallback | None) -> None:
        self.progress, self.callback = progress, on_step
        self.stop = False

    def on_step(self, done: int, total: int, latents: np.ndarray) -> None:
        if self.progress is not None:
            self.progress(done, total)
        if self.callback is not None and self.callback(done, total, latents) is False:
            self.stop = True

    def interrupted(self) -> bool:
        stop, self.stop = self.stop, False  # the next pass starts afresh, as before
        return stop


def from_callbacks(observer: Observer | None, progress: Progress | None = None,
                   on_step: StepCallback | None = None) -> Observer:
    """`observer`, or the callbacks `progress(done, total)` / `on_step(done, total, latents)`
    (returning False stops) as one; an Observer that watches nothing when all are None."""
    if observer is not None and (progress is not None or on_step is not None):
        raise ValueError("give an observer or progress/on_step callbacks, not both")
    if observer is not None:
        return observer
    return _Callbacks(progress, on_step)
