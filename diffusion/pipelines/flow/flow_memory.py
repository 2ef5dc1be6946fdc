"""The memory modes of the flow families (the WebUI's --medvram, --lowvram, --max-vram SIZE),
written once for every family whose networks are a text encoder, a transformer of block lists
and a VAE (FLUX.1 with Kontext and Fill, SD 3/3.5, Chroma: flux1_memory; FLUX.2, Qwen-Image
and its edit models, Qwen-Image 2.1, Z-Image):

    model.set_memory_mode(MemoryMode(lowvram=True))     # or MemoryMode.parse(max_vram="20G")

- medvram: the text encoder, the transformer and the VAE are three units, one on the GPU at a
  time: the text encoder leaves when the transformer comes, the transformer when the VAE
  decodes.
- lowvram: as medvram, and the transformer's blocks stream: each is uploaded right before it
  runs and leaves when the next one comes; everything else of the transformer (embedders,
  modulations, output layers, pad tokens) stays. Blocks that made the trip keep their host
  copy, so streaming reads nothing back, and a block's buffers stay pooled for the next
  block's weights, while the text encoders' and the VAE's go back to the driver as they
  leave (pooled, they would fill the pool: every block's weights and activations would
  then be new buffers, made and freed at each use).
- max_vram: a budget in bytes. The same units as lowvram, but nothing leaves while the device
  holds less than the budget; past it units go to host memory, the least recently used
  first but the blocks last, the one just run first (they run as a loop, in the same order
  every step: the blocks that fit stay for every step, the others stream through the room of
  one). The budget is the device's memory limit (gpustd.nn.residency): the activations are
  held to it too. A budget below the transformer's unstreamed weights plus the largest unit
  is refused at once, naming that minimum.

A family says what moves in a `MemoryLayout` (its model's `memory_layout`): the transformer
and its block lists, the networks that read the prompt (one unit: Qwen-Image-Edit's language
model and vision tower move together) with the calls that bring them in, and the VAE (its
`decode` and `encode` bring it in). `load_network` loads a network straight to host memory
when the pipeline is loaded with `offload` (the CLI and the server do so whenever a memory
mode is asked for), so the load peaks at one network, not all of them. A model loaded to
the GPU instead (the Python API's `load_pipeline` without `offload`) has its networks' host
copies read back as the mode is set (gpustd.nn.residency: a unit may have to leave inside a
capture, where no read-back can be): host memory the size of the model, as a model loaded to
host memory holds.

A generation's own networks join the plan while it runs (`FlowMemoryPlan.guests`):

- ControlNets are placed as the transformer is. Under medvram they share its unit (they run
  at every step beside it, often inside its call, as Z-Image's do: a unit of their own would
  send the whole transformer back and forth at each step); under lowvram and max_vram their
  block lists stream block by block among the transformer's, their other parts (embedders,
  the hint block) on the GPU for the run.
- FLUX Redux's SigLIP and embedder read the picture once, as one unit, as the text encoders
  read the prompt.

When the generation ends they leave the plan for host memory; the plain mode brings them
back before it runs them (`restore_guests`).

Under a mode no flow network runs from a capture (the plain mode replays the steps of the
families that keep one: flow_replay), so every mode runs the plain mode's kernels on the same
weights: the pictures are the plain run's, bitwise (diffusion.pipelines.sd.memory says the
same of the UNet's modes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from gpucore import Device, MemoryLimitError
from gpustd import asarray
from gpustd.nn import Module, ModuleList, Namespace, deferred
from gpustd.nn.offload import offload, parameter_bytes, restore
from gpustd.nn.residency import Residency

from ...loaders.component import load_component
from ...loaders.weights import ComponentWeights
from ...models.tiled_vae import budget_tile, decode_tiled, untiled_bytes
from ...models.transformer_ops import forget_kept
from ...models.vae import AutoencoderKL
from ..sd.memory import GIB, MemoryMode
from .flow_replay import step_replays

__all__ = ["FlowMemoryPlan", "MemoryLayout", "MemoryModes", "load_network", "restore_guests",
           "smallest_flow_budget"]

M = TypeVar("M", bound=Module)
# a ControlNet block's methods besides `forward` that run it (Z-Image's control blocks' `step`)
_BLOCK_CALLS = ("step",)


@dataclass(frozen=True)
class MemoryLayout:
    """What a flow family's memory modes move. `blocks`: the transformer's block lists
    (ModuleLists), streamed in turn under lowvram; `text_encoders`: the networks that read the
    prompt, one unit; `text_calls`: the (module, method) calls that bring that unit in first;
    `block_calls`: a streamed block's methods besides `forward` that bring it in when the
    blocks stream (FLUX.1's first block's `modulated_input`, TeaCache's measure; Qwen-Image
    2.1's `prefix` and `image`, which run its blocks instead of `forward`);
    `transformer_calls`: the transformer's methods besides `forward` that bring it in when it
    is one unit (Qwen-Image 2.1's `prefix`, which runs its blocks over the prompt)."""

    transformer: Module
    blocks: tuple[ModuleList[Any], ...]
    text_encoders: tuple[Module, ...]
    text_calls: tuple[tuple[Module, str], ...]
    vae: Module
    block_calls: tuple[tuple[Module, str], ...] = ()
    transformer_calls: tuple[str, ...] = ()

    def streamed(self) -> list[Module]:
        """The transformer's streamed units: every block of its block lists, in order."""
        return [block for blocks in self.blocks for block in blocks]

    def fixed(self) -> Module:
        """What stays on the GPU while the blocks stream: every other child of the
        transformer (modules and bare parameters such as Z-Image's pad tokens), gathered
        under one Namespace."""
        lists = {id(blocks) for blocks in self.blocks}
        fixed = Namespace()
        for name, value in vars(self.transformer).items():
            if not name.startswith("_") and id(value) not in lists:
                setattr(fixed, name, value)
        return fixed


def smallest_flow_budget(layout: MemoryLayout, controlnets: Sequence[Module] = (),
                         readers: Sequence[Module] = ()) -> int:
    """The least --max-vram can be: the transformer's weights that never leave and the largest
    unit's (a block, the text encoders together, the VAE), activations not counted; with a
    generation's `controlnets` and `readers` (FlowMemoryPlan.guests) their parts that stay
    for the run and their units too."""
    blocks = layout.streamed()
    fixed = parameter_bytes(layout.transformer) - sum(parameter_bytes(b) for b in blocks)
    text = sum(parameter_bytes(n) for n in layout.text_encoders)
    units = [text, parameter_bytes(layout.vae), *map(parameter_bytes, blocks),
             sum(parameter_bytes(n) for n in readers)]
    for model in {id(m): m for m in controlnets}.values():
        kept, streamed = _control_parts(model)
        fixed += parameter_bytes(kept)
        units.extend(map(parameter_bytes, streamed))
    return fixed + max(units)


class FlowMemoryPlan:
    """A flow pipeline's memory `mode` in effect: its Residency over the text encoders, the
    transformer (whole, or its blocks) and the VAE (`decode`, `encode`). `release` switches it
    off (every unit back on the GPU)."""

    def __init__(self, layout: MemoryLayout, mode: MemoryMode) -> None:
        self.mode, self.layout = mode, layout
        device = next(iter(layout.transformer.parameters())).device
        if mode.max_vram is not None and mode.max_vram < (least := smallest_flow_budget(layout)):
            raise ValueError(
                f"--max-vram {mode.max_vram / GIB:.3f} GiB cannot hold the model's largest part "
                f"with what always stays on the GPU: it needs at least {least / GIB:.3f} GiB "
                f"({-(-least // (1 << 20))} MiB) before any activations; give more")
        budget = mode.max_vram if mode.max_vram is not None else 0
        self.residency = Residency(device, budget=budget, release=not mode.lowvram)
        try:  # a failure below must not leave the budget's cap set
            encoders = layout.text_encoders
            text: Module = encoders[0] if len(encoders) == 1 else ModuleList(encoders)
            # the text encoders and the VAE leave the pool when evicted (release): their buffers
            # fit no block's, and pooled they would fill it (Residency's class doc)
            self.residency.add(text, name="text encoder", stream=False, release=True)
            for member, method in layout.text_calls:
                self.residency.stream(member, method, unit=text)
            if mode.streams_unet:
                restore(layout.fixed())  # loaded offloaded: they stay now
                for block in layout.streamed():
                    self.residency.add(block, name="transformer block", loop=True)
                for block, method in layout.block_calls:
                    self.residency.stream(block, method, unit=block)
            else:
                self._add_transformer()
            self.residency.add(layout.vae, name="VAE", method="decode", release=True)
            self.residency.stream(layout.vae, "encode", unit=layout.vae)
            self.residency.fit()  # within the budget from now on, not from the first unit used
        except BaseException:  # the units stay where they are (a model loaded to host: there)
            self.residency.close(bring_back=False)
            raise

    def _add_transformer(self) -> None:
        """The transformer one unit, brought in by `forward` and its `transformer_calls`."""
        transformer = self.layout.transformer
        self.residency.add(transformer, name="transformer")
        for method in self.layout.transformer_calls:
            self.residency.stream(transformer, method, unit=transformer)

    def release(self) -> None:
        """Every unit back on the GPU and the methods unwrapped (the mode switched off)."""
        self.residency.close()

    def replace_vae(self, old: Module, new: Module) -> None:
        """`new` the VAE unit in place of `old` (the VAE made float32), `old` no longer
        managed (its weights go with it)."""
        self.residency.remove(old)
        self.residency.add(new, name="VAE", method="decode", release=True)
        self.residency.stream(new, "encode", unit=new)
        self.residency.fit()

    @contextmanager
    def guests(self, controlnets: Sequence[Module] = (),
               readers: Sequence[Module] = ()) -> Iterator[None]:
        """Within the block, the plan also places `controlnets` (the transformer's way) and
        `readers` (one unit: FLUX Redux's SigLIP and embedder), as the module doc says; after
        it they are in host memory and no units any more."""
        controlnets = list({id(m): m for m in controlnets}.values())
        residency, transformer = self.residency, self.layout.transformer
        budget = self.mode.max_vram
        if budget is not None and budget < (
                least := smallest_flow_budget(self.layout, controlnets, readers)):
            raise ValueError(
                f"--max-vram {budget / GIB:.3f} GiB cannot hold this generation's ControlNet "
                f"or Redux parts beside the model's: it needs at least {least / GIB:.3f} GiB "
                f"({-(-least // (1 << 20))} MiB) before any activations; give more")
        for model in (*controlnets, *readers):  # in host memory until their turn comes
            offload(model)
        added: list[Module] = []
        if readers:
            added.append(reader := ModuleList(list(readers)))
            residency.add(reader, name="picture reader", stream=False, release=True)
            for member in readers:
                residency.stream(member, "forward", unit=reader)
        if controlnets and self.mode.streams_unet:
            for model in controlnets:
                fixed, blocks = _control_parts(model)
                restore(fixed)
                for block in blocks:
                    added.append(block)
                    residency.add(block, name="ControlNet block", loop=True)
                    for method in _BLOCK_CALLS:
                        if hasattr(type(block), method):
                            residency.stream(block, method, unit=block)
        elif controlnets:  # one unit with the transformer while they run
            residency.evict(transformer)
            residency.remove(transformer)
            added.append(joint := ModuleList([transformer, *controlnets]))
            residency.add(joint, name="transformer and ControlNets", stream=False)
            for member in (transformer, *controlnets):
                residency.stream(member, "forward", unit=joint)
            for method in self.layout.transformer_calls:
                residency.stream(transformer, method, unit=joint)
        try:
            yield
        finally:
            for unit in added:
                residency.remove(unit)
            if controlnets and not self.mode.streams_unet:
                self._add_transformer()
            for model in (*controlnets, *readers):
                offload(model)
            if residency.release:
                _weight_device(transformer).empty_pool()

    def decode(self, vae: Any, z: np.ndarray) -> np.ndarray:
        """`vae.decode(z)` as float32 host images (B, 3, H, W), `z` the VAE's own latents on
        the host, the VAE brought in with room for its activations. Under a budget that may
        not hold the untiled pass beside what stays on the GPU (an AutoencoderKL's, by
        tiled_vae.untiled_bytes) and does not (it stops at the budget: MemoryLimitError), in
        tiles instead (decode_tiled, each tile's activations in host memory between the
        GroupNorms, a tile's untiled pass half the room the budget leaves): the picture then
        differs from the untiled one by the tiled decode's error. A pass that fits gives the
        plain picture; one that does not costs the part of the untiled decode it ran."""
        weight = vae.decoder.conv_in.weight
        budget = self.mode.max_vram
        for network in (self.layout.transformer, *self.layout.text_encoders):
            forget_kept(network)  # their per-size tables out of the budget's way
        room = untiled_bytes(vae, z.shape) if isinstance(vae, AutoencoderKL) else 0
        if vae in self.residency:
            self.residency.use(vae, extra=room if budget is not None else 0)
        free = 0 if budget is None else budget - weight.device.memory_stats().allocated
        try:
            return vae.decode(asarray(z, dtype=weight.dtype, device=weight.device)).numpy(
                ).astype(np.float32)
        except MemoryLimitError:
            if budget is None or not room or room <= free:
                raise  # no tiling would help: the error names the bytes needed
        free = budget - weight.device.memory_stats().allocated
        return decode_tiled(vae, z, tile=budget_tile(vae, z.shape, max(free, 0)), offload=True)


class MemoryModes:
    """`memory_mode` and `set_memory_mode` for FlowModel (its base) and every family model
    built on it, whose `memory_layout` says what its memory modes move."""

    _memory: FlowMemoryPlan | None = None  # the memory mode in effect (set_memory_mode)

    def memory_layout(self) -> MemoryLayout:
        raise NotImplementedError(f"{type(self).__name__} defines no memory_layout()")

    @property
    def memory_mode(self) -> MemoryMode | None:
        return None if self._memory is None else self._memory.mode

    def memory_decode(self) -> Callable[[Any, np.ndarray], np.ndarray] | None:
        """How the mode in effect decodes (FlowMemoryPlan.decode: in tiles where --max-vram
        asks); None without a mode."""
        return None if self._memory is None else self._memory.decode

    @contextmanager
    def guests(self, controlnets: Sequence[Module], readers: Sequence[Module]
               ) -> Iterator[None]:
        """A generation's own networks placed by the mode in effect while the block runs
        (FlowMemoryPlan.guests); without a mode, brought back to the GPU where a mode left
        them (restore_guests)."""
        if self._memory is None:
            restore_guests([*controlnets, *readers])
            yield
            return
        with self._memory.guests(controlnets, readers):
            yield

    def replace_vae(self, old: Module, new: Module) -> None:
        """The mode in effect takes `new` as its VAE in place of `old` (none: nothing to do)."""
        if self._memory is not None:
            self._memory.replace_vae(old, new)

    def set_memory_mode(self, mode: MemoryMode) -> None:
        """Run in the WebUI's --medvram / --lowvram / --max-vram mode (the module doc; all
        off: every weight on the GPU). The pipeline's step replays (flow_replay) run eagerly
        while a mode is on."""
        if self._memory is not None:
            self._memory.release()
            self._memory = None
        for replay in step_replays(getattr(self, "pipe", None)):  # weights about to move
            replay.use_eager(bool(mode))
        if mode:
            self._memory = FlowMemoryPlan(self.memory_layout(), mode)


def restore_guests(networks: Sequence[Module]) -> None:
    """A generation's own networks (ControlNets, Redux's) back on the GPU where a memory mode
    left them in host memory (FlowMemoryPlan.guests), for the plain mode to run them."""
    for network in networks:
        restore(network)


def _weight_device(module: Module) -> Device:
    """The device of `module`'s first parameter."""
    return next(iter(module.parameters())).device  # type: ignore[no-any-return]


def _control_parts(model: Module) -> tuple[Module, list[Module]]:
    """A ControlNet's parts that stay on the GPU while its blocks stream (one Namespace) and
    its streamed blocks: the items of each of its block lists (ModuleLists), in order."""
    fixed = Namespace()
    blocks: list[Module] = []
    for name, value in vars(model).items():
        if isinstance(value, ModuleList):
            blocks.extend(value)
        elif not name.startswith("_"):
            setattr(fixed, name, value)
    return fixed, blocks


def load_network(build: Callable[[], M], weights: ComponentWeights, *, device: Device,
                 offload_to_host: bool, slices: bool = False) -> M:
    """The network `build()` makes (under gpustd.nn.deferred: each parameter takes GPU memory
    when its values arrive) with `weights` loaded (`load_component`); with `offload_to_host`,
    then moved to host memory and the pool emptied, before the next network loads (a GGUF's
    quantized blocks go to host memory as they are read, never to the GPU)."""
    with deferred():
        model = load_component(build(), weights, slices=slices, to_host=offload_to_host)
    if offload_to_host:
        offload(model)
        device.empty_pool()
    return model
