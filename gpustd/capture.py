"""gpustd.capture: run a Tensor function's ops once, then replay its GPU command stream.

The Tensor-level form of `gpucore.Device.capture` (the role of CUDA Graphs /
`torch.cuda.make_graphed_callables`). The first call with a given input signature runs the
function normally while recording; later calls with the same signature copy the new inputs
into the capture's own input tensors and replay the recorded dispatches: no Python op logic,
no new pipelines, bind groups or buffers (beyond the fresh output tensors, which come from
the pool).

Signature = the structure of the arguments, every Tensor's shape and dtype (and device),
every other argument's value, which must be hashable (numbers, strings, tuples, None), and
the Conv2d padding mode in effect (gpustd.nn.padding_mode). A new
signature records a new capture; it never replays a stale one. So pass data that changes
from call to call (a timestep, a guidance scale) as a Tensor, not as a Python number: a
number is a static argument, and each new value means a new recording.

What the function must not do, and what happens if it does (see gpucore._capture):
- read a Tensor back to the host (`.numpy()`, `float(t)`): CaptureError;
- depend on host state that changes later (a Python global, weights replaced by
  load_state_dict): the replay repeats the first call's work; call `reset()` after changing it;
- write host data (`Tensor.from_numpy`, `Buffer.write`) derived from its Tensor inputs:
  impossible without a read-back; host data written inside is a constant of the capture.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from gpucore import Capture, Device, phase

from ._conv_padding import padding_mode_in_effect
from ._tensor import Tensor

__all__ = ["Captured", "capture"]


def capture(fn: Callable[..., Any] | None = None, *, copy_outputs: bool = True,
            max_signatures: int = 8) -> Any:
    """Wrap `fn` (Tensors and hashable values in, a Tensor or a tuple/list/dict of them out)
    so that it is recorded on its first call per input signature and replayed afterwards.

    `copy_outputs=True` (default) returns fresh Tensors on every call. With False the call
    returns the capture's own output Tensors, which the next call with the same signature
    overwrites (one copy less per output). Up to `max_signatures` captures are kept (least
    recently used dropped). Usable as `@gpustd.capture` or `gpustd.capture(fn, ...)`.
    torch equivalent: `torch.cuda.make_graphed_callables` / CUDA Graphs.

    >>> step = gpustd.capture(lambda x, t: unet(x, t, context))
    >>> out = step(latents, timesteps)   # recorded (runs normally)
    >>> out = step(latents2, timesteps2) # replayed
    """
    if fn is None:
        return functools.partial(capture, copy_outputs=copy_outputs,
                                 max_signatures=max_signatures)
    return Captured(fn, copy_outputs=copy_outputs, max_signatures=max_signatures)


class _Entry:
    __slots__ = ("graph", "inputs", "outputs", "structure")

    def __init__(self, graph: Capture, inputs: list[Tensor], outputs: list[Any],
                 structure: Any) -> None:
        self.graph, self.inputs, self.outputs, self.structure = graph, inputs, outputs, structure


class Captured:
    """A function captured per input signature (see `capture`)."""

    def __init__(self, fn: Callable[..., Any], *, copy_outputs: bool = True,
                 max_signatures: int = 8) -> None:
        self.fn = fn
        self.copy_outputs = copy_outputs
        self.max_signatures = max(1, int(max_signatures))
        self.recordings = 0  # how many times fn actually ran (recorded)
        self.replays = 0
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return (f"<gpustd.capture of {getattr(self.fn, '__name__', self.fn)!r}: "
                f"{len(self._entries)} signatures, {self.recordings} recordings, "
                f"{self.replays} replays>")

    def reset(self) -> None:
        """Drop every capture (do this after changing state the function reads)."""
        for entry in self._entries.values():
            entry.graph.release()
        self._entries.clear()

    def lend(self) -> int:
        """Lend every capture's scratch to the device's pool (gpucore.Capture.lend) until
        `reclaim()` or the next call: other work may use that memory meanwhile. Returns the
        bytes lent."""
        return sum(entry.graph.lend() for entry in self._entries.values())

    def reclaim(self) -> None:
        """Take the lent scratch back; a capture whose scratch was kept by other work is
        dropped (the next call with its signature records again)."""
        for key, entry in list(self._entries.items()):
            if not entry.graph.reclaim():
                del self._entries[key]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tensors: list[Tensor] = []
        structure = _flatten((args, kwargs), tensors, "argument")
        if not tensors:
            name = getattr(self.fn, "__name__", "the function")
            raise TypeError(f"gpustd.capture: {name} was called with no Tensor argument; "
                            "there is nothing to feed a replay (call it directly)")
        device = tensors[0].device
        for t in tensors[1:]:
            if t.device is not device:
                raise ValueError("gpustd.capture: all Tensor arguments must be on one device "
                                 f"(got {device.name!r} and {t.device.name!r})")
        # Conv2d layers pad by the mode in effect: each mode records its own dispatches
        key = (id(device), padding_mode_in_effect(), structure)
        entry = self._entries.get(key)
        if entry is not None and (entry.graph.lent or entry.graph.closed) and (
                not entry.graph.reclaim()):  # its lent scratch is gone: record again
            del self._entries[key]
            entry = None
        if entry is None:
            with phase("capture"):
                entry = self._record(device, key, structure, tensors)
        else:
            self._entries.move_to_end(key)
            for own, given in zip(entry.inputs, tensors):
                own.buffer.copy_from(given.buffer)
            entry.graph.replay()
            self.replays += 1
        outputs = entry.outputs
        if self.copy_outputs:
            outputs = [_copy(o) if isinstance(o, Tensor) else o for o in outputs]
        return _unflatten(entry.structure, iter(outputs))

    def _record(self, device: Device, key: tuple, structure: Any,
                tensors: list[Tensor]) -> _Entry:
        inputs = [Tensor.empty(t.shape, t.dtype, device=device) for t in tensors]
        for own, given in zip(inputs, tensors):
            own.buffer.copy_from(given.buffer)
        args, kwargs = _unflatten(structure, iter(inputs))
        with device.capture() as graph:
            result = self.fn(*args, **kwargs)
        outputs: list[Any] = []
        out_structure = _flatten(result, outputs, "result", static_ok=True)
        entry = _Entry(graph, inputs, outputs, out_structure)
        self.recordings += 1
        self._entries[key] = entry
        while len(self._entries) > self.max_signatures:
            self._entries.popitem(last=False)[1].graph.release()
        return entry


def _copy(t: Tensor) -> Tensor:
    out = Tensor.empty(t.shape, t.dtype, device=t.device)
    out.buffer.copy_from(t.buffer)
    return out


def _flatten(obj: Any, leaves: list[Any], path: str, static_ok: bool = False) -> Any:
    """A hashable description of `obj`'s structure; Tensors (and, for results, any leaf)
    go to `leaves` in order."""
    if isinstance(obj, Tensor):
        leaves.append(obj)
        return ("T", obj.shape, obj.dtype.str)
    if isinstance(obj, (tuple, list)):
        return (type(obj).__name__,
                tuple(_flatten(v, leaves, f"{path}[{i}]", static_ok) for i, v in enumerate(obj)))
    if isinstance(obj, dict):
        keys = tuple(obj)
        return ("dict", keys, tuple(_flatten(obj[k], leaves, f"{path}[{k!r}]", static_ok)
                                    for k in keys))
    if static_ok:
        leaves.append(obj)
        return ("leaf",)
    try:
        hash(obj)
    except TypeError:
        raise TypeError(
            f"gpustd.capture: {path} is a {type(obj).__name__}, which is neither a Tensor nor "
            "hashable; pass data as a Tensor (gpustd.asarray) and settings as numbers, "
            "strings or tuples") from None
    return ("S", type(obj).__name__, obj)


def _unflatten(structure: Any, leaves: Any) -> Any:
    kind = structure[0]
    if kind in ("T", "leaf"):
        return next(leaves)
    if kind == "S":
        return structure[2]
    if kind == "dict":
        return {k: _unflatten(s, leaves) for k, s in zip(structure[1], structure[2])}
    items = [_unflatten(s, leaves) for s in structure[1]]
    return tuple(items) if kind == "tuple" else items
