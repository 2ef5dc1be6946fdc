"""Wan's memory modes (the WebUI's --medvram, --lowvram, --max-vram SIZE): the flow families'
plan (flow/flow_memory) over Wan's networks.

    pipe.set_memory_mode(MemoryMode(lowvram=True))     # or MemoryMode.parse(max_vram="12G")

- medvram: UMT5 (with Wan 2.1 I2V's CLIP vision encoder), the transformer and the VAE are
  three units, one on the GPU at a time; the transformer's text and image embedders bring it
  in as its forward does.
- lowvram: as medvram, and the transformer's blocks stream (flow_memory), and so does UMT5:
  its token table and each of its blocks are units (each block's position-bias table brings
  its block in), its final norm stays. UMT5-XXL is 12.5 GiB with its float32 `wo`: as one
  unit it alone would pass a 12 GiB budget.
- max_vram: a budget in bytes, the same units as lowvram; past the budget the least recently
  used units leave, and every allocation (the VAE decode's chunks included) is held to it.
  A budget below what always stays plus the largest unit is refused at once, naming it.

In every mode each phase (the text, the steps, the decode) begins with the units of the
phase before sent to host memory and the pool emptied (`WanMemoryPlan.next_phase`).

Wan VACE's control blocks are placed as the main blocks are (under lowvram and max_vram each
is a unit, the first brought in by its `start` as well), its control embedding as the other
embedders; so are Wan 2.2 Animate's motion and face encoders (its `encode_face`) and its face
blocks, parts of the transformer beside its blocks.

Wan 2.2 A14B's two experts are placed alike: under medvram each is a unit of its own, under
lowvram and max_vram both experts' blocks are units and only the running expert's other parts
(embedders, modulations, output layer) stay on the GPU. The boundary step is a new phase: the
high-noise expert's blocks and parts leave before the low-noise expert's come.

The VAE decodes one latent frame at a time in every mode (its chunks replayed from the third
on, as in the plain mode); no other Wan network runs from a capture, so each mode runs the
plain mode's kernels on the same weights: the frames are the plain mode's, bitwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from gpustd.nn import Module
from gpustd.nn.offload import offload, parameter_bytes, restore

from ..flow.flow_memory import FlowMemoryPlan, MemoryLayout
from ..sd.memory import GIB, MemoryMode

__all__ = ["WanMemoryModes", "WanMemoryPlan", "smallest_wan_budget"]


def _text_blocks(text_encoder: Any) -> list[Any]:
    return list(text_encoder.encoder.block)


def _blocks(transformer: Any) -> tuple[Any, ...]:
    """The transformer's block lists: its blocks, and Wan VACE's control blocks."""
    vace = getattr(transformer, "vace_blocks", None)
    return (transformer.blocks,) if vace is None else (transformer.blocks, vace)


def _block_calls(transformer: Any) -> tuple[tuple[Any, str], ...]:
    """Wan VACE: its first control block's `start` (proj_in, before the block runs)."""
    vace = getattr(transformer, "vace_blocks", None)
    return () if vace is None else ((vace[0], "start"),)


def _expert_layout(layout: MemoryLayout, transformer: Any) -> MemoryLayout:
    """`layout` with `transformer` (Wan 2.2 A14B's other expert) in its transformer's place."""
    return replace(layout, transformer=transformer, blocks=_blocks(transformer),
                   block_calls=_block_calls(transformer))


def smallest_wan_budget(layout: MemoryLayout, text_blocks: list[Module],
                        text_kept: Module | None, second: Module | None = None) -> int:
    """The least --max-vram can be: what never leaves (the running expert's parts around its
    blocks, UMT5's final norm) and the largest unit (a transformer or UMT5 block, the token
    table with CLIP vision, the VAE), activations not counted; `second`: Wan 2.2 A14B's
    low-noise expert."""
    experts = [layout] if second is None else [layout, _expert_layout(layout, second)]
    streamed = [block for expert in experts for block in expert.streamed()]
    fixed = max(parameter_bytes(expert.fixed()) for expert in experts)
    kept = 0 if text_kept is None else parameter_bytes(text_kept)
    text = sum(map(parameter_bytes, layout.text_encoders))
    units = [text, parameter_bytes(layout.vae), *map(parameter_bytes, streamed),
             *map(parameter_bytes, text_blocks)]
    return fixed + kept + max(units)


class WanMemoryPlan(FlowMemoryPlan):
    """Wan's memory `mode` in effect over its networks (the module doc); `release` switches it
    off (every unit back on the GPU)."""

    def __init__(self, mode: MemoryMode, *, text_encoder: Any, transformer: Any, vae: Any,
                 image_encoder: Any = None, transformer_2: Any = None) -> None:
        streams = mode.streams_unet
        readers = () if image_encoder is None else (image_encoder,)
        # streamed: the token table heads the text unit, UMT5's blocks are units of their own
        head = text_encoder.shared if streams else text_encoder
        layout = MemoryLayout(
            transformer=transformer, blocks=_blocks(transformer),
            block_calls=_block_calls(transformer),
            text_encoders=(head, *readers),
            text_calls=((head, "forward"), *(() if streams else ((head, "forward_each"),)),
                        *((r, "hidden_states") for r in readers)),
            vae=vae)
        blocks = _text_blocks(text_encoder) if streams else []
        kept = text_encoder.encoder.final_layer_norm if streams else None
        if mode.max_vram is not None and mode.max_vram < (
                least := smallest_wan_budget(layout, blocks, kept, transformer_2)):
            raise ValueError(
                f"--max-vram {mode.max_vram / GIB:.3f} GiB cannot hold Wan's largest part with "
                f"what always stays on the GPU: it needs at least {least / GIB:.3f} GiB "
                f"({-(-least // (1 << 20))} MiB) before any activations; give more")
        super().__init__(layout, mode)
        residency = self.residency
        # Wan 2.2 A14B: the low-noise expert's parts around its blocks, on the GPU in its turn
        self._second = None if transformer_2 is None else _expert_layout(layout, transformer_2)
        if not streams:  # the whole transformer moves: its embedders bring it in too
            if transformer_2 is not None:
                residency.add(transformer_2, name="transformer")
            for expert in (transformer, *(() if transformer_2 is None else (transformer_2,))):
                for method in ("encode_text", "encode_image", "encode_control", "encode_face"):
                    if hasattr(expert, method):  # Wan VACE's encode_control, Animate's face
                        residency.stream(expert, method, unit=expert)
            residency.fit()
            return
        if self._second is not None:
            offload(self._second.fixed())
            for block in self._second.streamed():
                residency.add(block, name="transformer block")
            for block, method in self._second.block_calls:
                residency.stream(block, method, unit=block)
        assert kept is not None
        restore(kept)
        for block in blocks:
            residency.add(block, name="text encoder block")
            table = getattr(block.layer[0].SelfAttention, "relative_attention_bias", None)
            if table is not None:  # read before the block runs (T5EncoderModel.position_bias)
                residency.stream(table, "forward", unit=block)
        residency.fit()

    def next_phase(self, network: Any = None) -> None:
        """A phase (the text, the transformer's steps, the VAE; `network`: the one it runs)
        begins: the units of the phase before leave and the pool is emptied. At a budget, the
        last phase's weights and idle buffers would otherwise hold the device at the cap,
        where every new size class drops other idle buffers to fit: the pool stays within
        the budget, but the driver frees a dropped buffer only once the work submitted with
        it is done, and its figure climbed to 3x the budget (bench/wan_lowvram). Wan 2.2
        A14B's blocks streaming, an expert's phase also sends the other expert's parts
        around its blocks to host memory and brings its own."""
        self.residency.evict_all()
        experts = [self.layout, *(() if self._second is None else (self._second,))]
        running = [e for e in experts if e.transformer is network]
        if running and len(experts) > 1 and self.mode.streams_unet:
            for expert in experts:
                if expert is not running[0]:
                    offload(expert.fixed())
        self.residency.device.empty_pool()
        if running and len(experts) > 1 and self.mode.streams_unet:
            restore(running[0].fixed())

    def release(self) -> None:
        """Every unit back on the GPU (the mode switched off), both experts' parts too."""
        super().release()
        if self._second is not None and self.mode.streams_unet:
            restore(self.layout.fixed())
            restore(self._second.fixed())


class WanMemoryModes:
    """`memory_mode`, `set_memory_mode` and `on_gpu` for the pipelines of Wan's networks
    (WanPipeline, HeliosPipeline: their base)."""

    _memory: WanMemoryPlan | None = None  # the memory mode in effect (set_memory_mode)
    offload = False  # one network on the GPU at a time (the others' weights in host memory)
    text_encoder: Any
    transformer: Any
    transformer_2: Any
    image_encoder: Any
    vae: Any

    @property
    def memory_mode(self) -> MemoryMode | None:
        return None if self._memory is None else self._memory.mode

    def set_memory_mode(self, mode: MemoryMode) -> None:
        """Run in the WebUI's --medvram / --lowvram / --max-vram mode (the module doc; all
        off: every weight on the GPU, or each network whole in turn where loaded with
        `offload`)."""
        if self._memory is not None:
            self._memory.release()
            self._memory = None
        if mode:
            self._memory = WanMemoryPlan(mode, text_encoder=self.text_encoder,
                                         transformer=self.transformer, vae=self.vae,
                                         image_encoder=self.image_encoder,
                                         transformer_2=self.transformer_2)

    @contextlib.contextmanager
    def on_gpu(self, network: Any) -> Iterator[None]:
        """`network`'s weights on the GPU for the block (offloading: uploaded, then back to
        host memory; under a memory mode its plan moves them)."""
        if self._memory is not None:  # its units come in as they run
            self._memory.next_phase(network)
            yield
            return
        if not self.offload:
            yield
            return
        for other in (self.text_encoder, self.transformer, self.vae, self.image_encoder,
                      self.transformer_2):
            if other is not None:
                offload(other)
        restore(network)
        try:
            yield
        finally:
            offload(network)
