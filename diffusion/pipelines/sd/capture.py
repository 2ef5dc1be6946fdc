"""A model's call captured once per input signature and kept from one generation to the next.

Recording runs the call eagerly (the ops' Python, new bind groups) at several replays' cost
(bench/unet.py, bench/vae.py), so a pipeline keeps its captures instead of recording every
image anew. A replay reads the weights from the buffers it was recorded with: new values
written into those buffers (a LoRA patching a layer, `load_state_dict` in the same dtype) are
what it sees; a parameter replaced by another Tensor (`load_state_dict` to another dtype) or
another model in the pipeline's slot (`pipe.unet = other`) is not, nor another accumulation
(`Module.gemm_accumulate`, chosen as the GEMMs record), so `ModelCapture.of` compares the
model, its accumulation and its parameters' buffers with those of the capture and records
afresh when they differ. A kept capture pins its intermediate buffers, which the pool can no longer
lend to other work: keep one where that memory is small against what replaying saves, and
lend its scratch to the work between (`lent`: a VAE decode borrows the UNet step's).
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from gpustd.capture import Captured, capture
from gpustd.nn.quantized import quantized_weights

__all__ = ["ModelCapture", "lent"]


class ModelCapture:
    """`fn(model, *tensors)` captured per input signature (gpustd.capture) for whichever model
    `of` is given. With `copy_outputs=False` the next call of the same signature overwrites
    the outputs.

    At most `max_signatures` captures are kept (each pins its intermediate buffers on the
    device), least recently used dropped first."""

    def __init__(self, fn: Callable[..., Any], *, max_signatures: int,
                 copy_outputs: bool = False) -> None:
        self._fn = fn
        self._model: Any = None
        # weak: a model whose weights leave the device (diffusion.pipelines.sd.memory) must not
        # have its old buffers held here
        self._buffers: tuple[weakref.ref[Any], ...] = ()
        self._accumulate: str | None = None
        # `of` binds fn to the model. Keep fn a module function, not a method of the pipeline:
        # the pinned buffers must go with the pipeline, not wait in a reference cycle for the
        # garbage collector.
        self.captured: Captured = capture(fn, copy_outputs=copy_outputs,
                                          max_signatures=max_signatures)

    def of(self, model: Any) -> Captured:
        """The capture of `fn` bound to `model`, emptied first (Captured.reset) when `model`
        or one of its parameter buffers is not the one it was recorded with. Walks the
        parameters: call once per generation, not per step."""
        # a quantized weight's blocks too: a LoRA merged into a K-format layer makes new ones
        buffers = (*(t.buffer for t in model.parameters()),
                   *(q.blocks for q in quantized_weights(model).values()))
        # what its GEMMs accumulate in is chosen as they record (--fp16-accumulation)
        accumulate = getattr(model, "gemm_accumulate", None)
        if model is not self._model or accumulate != self._accumulate \
                or len(buffers) != len(self._buffers) \
                or any(a is not b() for a, b in zip(buffers, self._buffers)):
            self.captured.reset()
            self.captured.fn = functools.partial(self._fn, model)
            self._model, self._buffers = model, tuple(_ref(b) for b in buffers)
            self._accumulate = accumulate
        return self.captured


@contextlib.contextmanager
def lent(*captures: ModelCapture) -> Iterator[None]:
    """The captures' scratch (activations that live only inside a call) is the pool's while
    the block runs (gpustd.Captured.lend): work that runs between replays, a VAE decode after
    the UNet's steps, takes it instead of holding its own beside it. Taken back after."""
    for kept in captures:
        kept.captured.lend()
    try:
        yield
    finally:
        for kept in captures:
            kept.captured.reclaim()


def _none() -> None:
    return None


def _ref(buffer: Any) -> Any:
    """A weak reference to `buffer` (None, an offloaded weight's blocks: a callable giving None)."""
    return _none if buffer is None else weakref.ref(buffer)
