"""A flow family's transformer step replayed from a capture the pipeline keeps.

For a small or fast transformer the wall time of a step is the Python that dispatches its
ops (Sana 1600M: some 580 dispatches a step, the GPU idle between them), so the plain
memory mode records the step's call once per input signature (gpustd.capture, through
diffusion.pipelines.sd.capture's `ModelCapture`, as SD's UNet step) and replays it at
every later step and generation: the role `torch.cuda.make_graphed_callables` plays for a
PyTorch pipeline. The recording is the eager call, and a replay runs the same kernels on the
same buffers, so the pictures are the eager ones bit for bit.

Everything that changes from one call or one generation to the next is an argument of the
captured call: the latents, the timestep (a float32 Tensor: a Python number would be a
static argument and record every step anew), the guidance, the prompt's states; what the
model reads on the host (Sana's caption mask, which sets how many caption tokens attend) is
a static, hashable argument, so another mask records another capture, never replays a stale
one. Nothing of a generation is closed over. A LoRA written into the weights' buffers is
replayed as it is; a replaced parameter, another accumulation or another model records
afresh (ModelCapture.of, looked up once per generation).

The step runs eagerly, op by op, where a replay cannot be right:

- under a memory mode (--medvram, --lowvram, --max-vram): the weights move between calls
  (flow_memory's Residency wraps the transformer's calls); `MemoryModes.set_memory_mode`
  switches the pipelines' replays off (`use_eager`), which drops their captures too;
- a step cache (diffusion.models.step_cache decides on the host, from values the step
  computed, whether to run the blocks) or ControlNet units (their blocks run inside the
  transformer's call, from maps of their own): every replayed family that takes them runs
  such a generation's steps eagerly;
- families not wired here call their transformer directly: Cosmos Video2World and
  Predict2.5, the video models; HiDream (its MoE layers route each token on the host from
  the gate's logits read back every call: a replay would repeat one step's routing);
- Sana, Sana Sprint, PixArt: nothing else (they take no step cache, ControlNet or prior;
  PixArt's caption mask and α 1024's picture size static, with its own sampler and the
  WebUI's alike). FLUX.1's
  Redux prior, its Fill and Canny / Depth inputs and Kontext's reference tokens are inputs
  (the prompt's states, the packed latents), so those steps replay; so do FLUX.2's
  reference pictures' tokens (after the noise's in the packed latents).

Qwen-Image-Edit (+Plus) and -Layered replay as Qwen-Image, the references' tokens in the packed
input and their grids (and Layered's RGBA flag) static arguments; Qwen-Image 2.1's prefix keys
and values of every block are inputs, its padding and layout static; Ovis-Image and
LongCat-Image (+Edit) share `timestep_step`; ERNIE-Image, CogView4 (its sizes static) and
Lumina 2 (its caption mask static), Cosmos Predict2 text-to-image (one timestep segment) and
Kandinsky 5's image pipelines (text tokens and pooled vector inputs) take the timestep as a
Tensor too. Bria 3.2 replays through `timestep_step`; AuraFlow's sigma, Krea 2's flow time (its
grid static, each prompt unpadded) and Z-Image Omni's timesteps (caption pieces, condition
latents and SigLIP2 features inputs; the clean timestep's modulations made inside the call) are
float32 Tensors; Bria FIBO (and FIBO Edit) passes its per-block text layers as a list of
inputs; Ideogram 4 keeps a StepReplay for each of its two transformers, the timestep's sinusoid
(float64 sines on the host) an input; HunyuanImage 2.1's prepared prompt (`PromptText`) enters
as its Tensors (inputs) and its host flags and glyph join plan (static), made anew inside the
call, meanflow's next timesteps and the distilled guidance Tensors too. Qwen-Image, Qwen-Image
2.1, ERNIE-Image, CogView4, Lumina 2, Kandinsky 5, Krea 2, Bria FIBO, HunyuanImage 2.1 and
Ideogram 4's conditional transformer keep 4 signatures (true CFG's two caption lengths, or a
prompt's and its negative's, at a hires pass's size too), each pinning its scratch (~25 B per
token x width in float16: bench/NOTES.md); the others 2.

Z-Image's rotary tables and Sana's caption bias, made on the host from the sizes, are constants
of a recording, whose signature holds those sizes; FLUX.1's and Chroma's rotary tables are
inputs, as FLUX.2's; Qwen-Image's are constants (made before the recording, kept per size),
its prompt mask a static argument. Chroma's timestep enters as its approximator's inputs,
made on the host (their sinusoids exact in float64) and passed as a Tensor; its attention
mask is a static argument.

A kept capture pins its activations: between the steps, the VAE decode borrows them
(`lent`, as SD's pipelines do), so the peak does not grow by a second set.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from gpustd.capture import Captured

from ..sd.capture import ModelCapture, lent

__all__ = ["MaskKey", "StepReplay", "lent_steps", "mask_key", "mask_of", "step_replays",
           "timestep_step"]

MaskKey = tuple[tuple[int, ...], bytes]


class StepReplay:
    """`fn(model, *args)`, a family's transformer call of one step, replayed from a capture
    kept across generations, or run eagerly while `eager` (a memory mode). `fn` must be a
    module function (ModelCapture: the pinned buffers go with the pipeline); at most
    `max_signatures` input signatures (sizes, batch, caption lengths) stay recorded."""

    def __init__(self, fn: Callable[..., Any], *, max_signatures: int = 2) -> None:
        self._fn = fn
        self.kept = ModelCapture(fn, max_signatures=max_signatures)
        self.eager = False

    @property
    def captured(self) -> Captured:
        """The capture (its `recordings` and `replays` count the calls)."""
        return self.kept.captured

    def step(self, model: Any) -> Callable[..., Any]:
        """The call of `fn` on `model` for one generation: the kept capture (recorded afresh
        where the model's weights are not those it was recorded with), or `fn` itself while
        eager. Walks the parameters: once per generation, not per step."""
        if self.eager:
            return functools.partial(self._fn, model)
        return self.kept.of(model)

    def use_eager(self, eager: bool) -> None:
        """Run eagerly (True) or replay; the captures are dropped either way (their weights'
        buffers may be about to move, and their activations pin memory)."""
        self.eager = eager
        self.kept.captured.reset()


def step_replays(pipe: Any) -> list[StepReplay]:
    """The StepReplays a pipeline keeps (its attributes)."""
    return [v for v in vars(pipe).values() if isinstance(v, StepReplay)] if pipe else []


@contextlib.contextmanager
def lent_steps(pipe: Any) -> Iterator[None]:
    """`pipe`'s step captures' scratch lent to the pool while the block runs (a VAE decode),
    taken back after (diffusion.pipelines.sd.capture.lent)."""
    with lent(*(replay.kept for replay in step_replays(pipe))):
        yield


def mask_key(mask: Any) -> MaskKey | None:
    """A host 0/1 mask (what a model reads on the host: Sana's caption mask, Chroma's
    attention mask) as a hashable static argument: (shape, bytes of it as bool)."""
    if mask is None:
        return None
    keep = np.asarray(mask).astype(bool)
    return keep.shape, keep.tobytes()


def mask_of(key: MaskKey | None) -> np.ndarray | None:
    """`mask_key`'s mask back, bool."""
    return None if key is None else np.frombuffer(key[1], bool).reshape(key[0])


def timestep_step(transformer: Any, hidden: Any, states: Any, timestep: Any,
                  rotary: tuple[Any, Any]) -> Any:
    """The step of a FLUX-trunk transformer conditioned on the timestep alone (Ovis-Image,
    LongCat-Image and its edit; a StepReplay's function): the packed latents (an edit's
    reference tokens after them), the prompt's states, the timesteps (a float32 Tensor,
    rounded to the model's dtype as host numbers are) and the rotary tables, all inputs."""
    return transformer(hidden, states, timestep, rotary=rotary)
