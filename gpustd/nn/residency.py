"""Which weights are on the GPU: modules brought in before they run and evicted to host memory
to keep the device within a memory budget (the WebUI's --medvram / --lowvram, Forge's and
diffusers' offloading).

    residency = Residency(device, budget=4 << 30)
    residency.add(pipe.text_encoder)                 # a unit: brought in when called
    for block in unet_blocks: residency.add(block)   # the UNet streamed block by block
    image = pipe.txt2img(...)                         # units come and go as they run

A unit is a Module whose weights move together (gpustd.nn.offload). `add` wraps its forward so
each call first runs `use(module)`: that brings the unit in (uploading its weights) and, where
the device holds more than `budget` bytes (`memory_stats().reserved`, idle pooled buffers
included), trims the pool (its buffers idle the longest first) and evicts other units until the
unit fits: the least recently used first, but units added with `loop=True` (a transformer's
blocks, run in the same order every step) after all others and the most recently used of them
first, so that the blocks that fit stay for every step and the rest stream through the room of
one; the pool's idle buffers that the unit's upload will take (an evicted block's, of the same
layout) are never trimmed for it. A budget > 0 is also the device's memory limit (gpucore's
`Device.memory_limit`) while the Residency lives: every allocation (a unit's activations as it
runs included) first trims the pool and evicts other units, so the device never holds more than
the budget; what cannot fit with everything else evicted raises gpucore.MemoryLimitError,
naming the bytes needed. The unit last brought in is never evicted for room (it may be
running). `budget=0` keeps one unit on the GPU at a time (the WebUI's modes: whatever ran
before leaves when the next unit comes), with no limit on the activations.

Bringing a unit in writes new buffers, which a capture (gpucore capture / replay) must not
record as constants: `use` inside a capture that needs an upload raises OffloadedError.
Evicting one is allowed there (a text encoder's capture recording while a budget sends other
units away) as long as it needs no read-back: under a budget `add` keeps a host copy of a unit
that is on the GPU (offload.keep_host_copy: a model loaded to the GPU, whose weights never
left), read back there and then, outside any capture, so host memory holds every unit's
weights, as for a model loaded to host memory. Inside a capture the victims pass over a unit
written since (a weight patched in place with no host copy kept); when only such units are
left to go, OffloadedError says so (a pipeline's captured UNet step then runs eagerly, where
the read-back is allowed).
A unit's `on_evict` runs before its weights leave (a pipeline releases the captures that pin
them, or the memory would stay held).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from gpucore import Device

from .module import Module
from .offload import (
    OffloadedError,
    device_bytes,
    is_offloaded,
    keep_host_copy,
    needs_read_back,
    offload,
    parameter_bytes,
    restore,
    upload_sizes,
)

__all__ = ["Residency"]


class _Unit:
    __slots__ = ("layout", "loop", "module", "name", "nbytes", "on_evict", "release")

    def __init__(self, module: Module, name: str, on_evict: Callable[[], None] | None,
                 release: bool | None, loop: bool) -> None:
        self.module, self.name, self.on_evict, self.release = module, name, on_evict, release
        self.loop = loop
        self.nbytes = parameter_bytes(module)
        self.layout = sorted(t.nbytes for t in module.parameters())  # same: buffers reusable


class _Streamed:
    """A unit's method: `use` first, then the class's method (weak references only, so the
    module and the Residency are freed by reference counting, not left in a cycle)."""

    __slots__ = ("forward", "module", "residency", "unit")

    def __init__(self, residency: Residency, module: Module, method: str, unit: Module) -> None:
        self.residency = weakref.ref(residency)
        self.module = weakref.ref(module)
        self.unit = weakref.ref(unit)
        self.forward = getattr(type(module), method)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module, unit, residency = self.module(), self.unit(), self.residency()
        assert module is not None and unit is not None
        if residency is not None:
            residency.use(unit)
        return self.forward(module, *args, **kwargs)


class Residency:
    """Units (Modules) on one device kept within `budget` bytes (None: no limit, units only
    move when `evict`/`evict_all` says so; 0: one unit at a time). See the module doc.

    release: with budget 0, empty the device's pool after evicting (the memory goes back to
    the driver; the next allocations are new buffers). False keeps evicted buffers pooled for
    the next unit's weights to reuse: what streaming the same blocks every step wants
    (--lowvram). A unit added with `release=True` empties the pool whenever it is evicted
    for room, under any budget: a text encoder evicted for the first block has no like to
    reuse its buffers, which pooled would fill the pool (its idle bytes are capped) and
    leave no room there for the blocks' buffers and the activations, each of them then
    made anew and freed again at every use."""

    def __init__(self, device: Device, *, budget: int | None, release: bool = True) -> None:
        if budget is not None and budget < 0:
            raise ValueError(f"a memory budget is a number of bytes >= 0, got {budget}")
        self.device = device
        self.budget = budget
        self.release = release
        self._units: dict[int, _Unit] = {}
        self._streamed: list[tuple[Module, str]] = []
        self._resident: OrderedDict[int, _Unit] = OrderedDict()  # least recently used first
        self._current = 0  # id of the unit last brought in: never evicted for room
        self.uploaded = 0  # bytes brought in since made (what streaming costs)
        self.evictions = 0
        if budget:
            device.memory_limit.set(budget, evict=self._evict_one)

    def __repr__(self) -> str:
        return (f"<Residency budget={self.budget} units={len(self._units)} "
                f"resident={len(self._resident)} uploaded={self.uploaded}>")

    def __contains__(self, module: Module) -> bool:
        """Whether `module` is a unit (added)."""
        return id(module) in self._units

    def add(self, module: Module, *, name: str = "", stream: bool = True, method: str = "forward",
            on_evict: Callable[[], None] | None = None, release: bool | None = None,
            loop: bool = False) -> None:
        """Make `module` a unit. stream: wrap its `method` so that every call brings it in
        (False: the caller runs `use` itself, e.g. before a capture records the module).
        release: True empties the pool whenever this unit is evicted for room, False never
        (None: the Residency's `release`, with budget 0 only; see the class doc). loop: the
        unit runs in a loop with the other loop units, in the same order every time (a
        transformer's blocks at every step; see the class doc). Under a budget, a unit on the
        GPU has its host copy taken now (a read-back, not inside a capture: see the module
        doc)."""
        unit = _Unit(module, name or type(module).__name__, on_evict, release, loop)
        if self.budget is not None:  # evicted inside a capture, it must not read back there
            keep_host_copy(module)
        self._units[id(module)] = unit
        if not is_offloaded(module):
            self._resident[id(module)] = unit
        if stream:
            self.stream(module, method, unit=module)

    def stream(self, member: Module, method: str, *, unit: Module) -> None:
        """Wrap `member.method` so that each call first brings in `unit` (a unit containing
        `member`: SDXL's two text encoders move as one unit, each streams it)."""
        setattr(member, method, _Streamed(self, member, method, unit))
        self._streamed.append((member, method))

    def use(self, module: Module, *, extra: int = 0) -> None:
        """Bring unit `module` onto the GPU (evicting others to stay within the budget, with
        room for `extra` bytes more: the activations it is about to make) and mark it the most
        recently used."""
        unit = self._units.get(id(module))
        if unit is None:
            raise KeyError(f"{type(module).__name__} is not a unit of this Residency: add it "
                           "(a pipeline whose model was replaced after its memory mode was set: "
                           "set the mode again, pipe.set_memory_mode(...))")
        self._current = id(module)
        if id(module) in self._resident and not is_offloaded(module):
            self._resident.move_to_end(id(module))
            self._make_room(extra, unit)  # one at a time: the others leave all the same
            return
        if self.device.capturing is not None:
            raise OffloadedError(
                f"{unit.name} must be brought onto the GPU inside a capture, which would record "
                "its weights as constants; bring it in (Residency.use) before recording")
        self._make_room(extra, unit, upload=upload_sizes(module))
        self.uploaded += restore(module)
        self._resident[id(module)] = unit

    def fit(self) -> None:
        """Trim the pool and evict units, least recently used first, until the device holds
        no more than the budget (units added on a device already over it; budget > 0)."""
        if self.budget:
            self._make_room(0, None)

    def _make_room(self, extra: int, unit: _Unit | None,
                   upload: tuple[list[int], int] = ([], 0)) -> None:
        """Room for `extra` bytes and `unit`'s `upload` (offload.upload_sizes): the idle
        buffers the upload will take are spared, a loop victim whose weights have sizes the
        upload needs is evicted before anything is trimmed (its buffers are the upload's),
        then other idle buffers are trimmed, then victims evicted."""
        if self.budget is None:
            return
        if self.budget == 0:
            others = [u for u in self._resident.values() if u is not unit]
            for resident in others:
                self.evict(resident.module)
            if any(self.release if resident.release is None else resident.release
                   for resident in others):
                self.device.empty_pool()
            return
        limit, (weights, other) = self.device.memory_limit, upload
        while True:
            stats = self.device.memory_stats()
            spare, missing = limit.spare(weights)
            over = stats.reserved + sum(missing) + other + extra - self.budget
            if over <= 0:
                return
            victim = self._victim()
            if victim is not None and victim.loop and not set(missing).isdisjoint(victim.layout):
                self._evict(victim)  # the upload takes (some of) its buffers
                continue
            if stats.pooled and limit.trim(over, stats.pooled, spare=spare):
                continue
            if not self._evict_one():
                return  # nothing left to evict: the allocations will say what is missing

    def _victim(self) -> _Unit | None:
        """The unit to evict next, never the current one: the least recently used outside the
        loop, else the loop's most recently used (the one needed again last: least recently
        used first would evict each loop unit just before its next use, and every unit of
        the loop would be uploaded every round). Inside a capture, none whose eviction would
        read back (`_stuck`)."""
        victim = None
        for unit in self._evictable():  # least recently used first
            if not unit.loop:
                return unit
            victim = unit
        return victim

    def _evictable(self) -> Iterator[_Unit]:
        """The resident units but the current one, least recently used first; inside a
        capture, those whose eviction reads nothing back."""
        capturing = self.device.capturing is not None
        for unit in self._resident.values():
            if id(unit.module) != self._current and not (
                    capturing and needs_read_back(unit.module)):
                yield unit

    def _evict_one(self) -> bool:
        """Evict the next victim (`_victim`); False when none is left. Inside a capture with
        only units left whose eviction would read back: OffloadedError (`_stuck`)."""
        victim = self._victim()
        if victim is not None:
            self._evict(victim)
        elif self.device.capturing is not None:
            self._stuck()
        return victim is not None

    def _stuck(self) -> None:
        """Raise OffloadedError if a resident unit other than the current one could go, but
        not inside a capture: its weights were written on the GPU and have no host copy."""
        for unit in self._resident.values():
            if id(unit.module) != self._current and needs_read_back(unit.module):
                raise OffloadedError(
                    f"{unit.name} must leave the GPU for room inside a capture, but weights of "
                    "it were written in place since it was made a unit (a LoRA merged into "
                    "quantized weights, load_state_dict) and have no host copy: the read-back "
                    "cannot be recorded. Set the memory mode again after such writes (it "
                    "takes the host copies), or give a larger budget")

    def _evict(self, victim: _Unit) -> None:
        """Evict `victim` for room (a unit added with release: the pool emptied after)."""
        self.evict(victim.module)
        if victim.release:
            self.device.empty_pool()

    def evict(self, module: Module) -> None:
        """Move unit `module`'s weights to host memory (its on_evict first)."""
        unit = self._resident.pop(id(module), None)
        if unit is None:
            return
        if unit.on_evict is not None:
            unit.on_evict()
        if device_bytes(module):
            offload(module)
            self.evictions += 1

    def remove(self, module: Module) -> None:
        """Stop managing unit `module` (one a generation brought, now done): the methods that
        bring it in unwrapped, its weights left where they are (evict it first to free
        them). A module that is no unit: nothing to do."""
        if self._units.pop(id(module), None) is None:
            return
        self._resident.pop(id(module), None)
        if self._current == id(module):
            self._current = 0
        kept = []
        for member, method in self._streamed:
            wrapper = vars(member).get(method)
            if isinstance(wrapper, _Streamed) and wrapper.unit() is module:
                del vars(member)[method]
            else:
                kept.append((member, method))
        self._streamed = kept

    def evict_all(self) -> None:
        """Every unit to host memory (torch: `model.to("cpu")`)."""
        for unit in list(self._resident.values()):
            self.evict(unit.module)

    def close(self, *, bring_back: bool = True) -> None:
        """Every unit back on the GPU (`bring_back=False`: left where it is) and every wrapped
        method unwrapped; the budget's cap lifted; the Residency manages nothing any more."""
        if self.budget:
            self.device.memory_limit.release(self._evict_one)
        for module, method in self._streamed:
            vars(module).pop(method, None)
        for unit in self._units.values() if bring_back else ():
            restore(unit.module)
        self._units.clear()
        self._resident.clear()
        self._streamed.clear()

    def resident_bytes(self) -> int:
        """Bytes of the units' weights on the GPU now."""
        return sum(device_bytes(u.module) for u in self._units.values())
