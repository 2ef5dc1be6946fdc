"""The WebUI's memory modes for a loaded pipeline: --medvram, --lowvram, --max-vram SIZE.

    pipe.set_memory_mode(MemoryMode(lowvram=True))     # or MemoryMode.parse(max_vram="4G")

- medvram: the text encoders, the UNet and the VAE are three units, one on the GPU at a time
  (the WebUI's `module_in_gpu`): the text encoders leave when the UNet comes, the UNet when
  the VAE decodes. Each stays whole while it runs, so the UNet step is still replayed
  (gpucore capture): it is brought in before its capture is looked up, and its capture (which
  pins the weights' buffers) is released when it leaves, so the next generation records once.
- lowvram: as medvram, and the UNet's blocks (every resnet, transformer and resampler of its
  down, mid and up blocks) stream: each is uploaded right before it runs and leaves when the
  next one comes; conv_in, the embeddings and conv_out stay. Weights of blocks that already
  made the trip keep their host copy, so streaming reads nothing back.
- max_vram: a budget in bytes. The same units as lowvram, but nothing leaves while the device
  holds less than the budget (`memory_stats().reserved`, the pool's idle buffers included);
  past it the pool is trimmed and the least recently used units go to host memory. The budget
  is the device's memory limit (gpustd.nn.residency): it holds at every allocation, a block's
  activations included, so the generation's peak stays within it (units leave inside the
  text encoders' capture too: a pipeline loaded to the GPU has its networks' host copies
  taken when the mode is set, as a read-back cannot be recorded there). The VAE decodes in
  tiles (activations held on the host between GroupNorms) when its untiled pass would not
  fit the budget. A budget below the UNet's unstreamed weights plus the largest unit is refused at
  once, naming that minimum; one that the activations outgrow raises gpucore.MemoryLimitError
  where they do, naming the bytes needed there.

Streaming uploads new buffers while the UNet runs, which a replay cannot repeat: under lowvram
the UNet runs eagerly (op by op, no capture), which costs host time per step (bench/lowvram.py
measures it). Under max_vram it runs eagerly while its blocks move; once a step ran with no
weight uploaded or evicted (the budget holds the whole UNet across a step), the next steps
replay a capture of it, until a block leaves (_BudgetStep). Attention needs no chunking for a
budget: the kernel never forms the score matrix (gpustd.nn.attention), so its memory is q, k,
v and the output.

A pipeline loaded for a mode (`load_pipeline(path, offload=True)`, what the CLI and the server
do under one) starts with every weight in host memory: the plan brings in what stays under
lowvram and max_vram (`unet_fixed`: the UNet's parts outside its blocks), the units come as
they run, and the mode switched off (`MemoryMode()`) puts every network on the GPU.

Pictures: weights come back bit for bit and the kernels are the same, so every mode gives the
plain run's picture bitwise; the tiled VAE (only when a budget asks for it) differs within the
tiling's blending (diffusion.models.tiled_vae). A float32 VAE in a float16 pipeline (SDXL's)
decodes and encodes by its float16 twins under a mode as in the plain mode
(diffusion.models.vae_half): each twin is a unit of its own, built again from the kept
calibration when the mode is set; a calibration whose untiled float32 pass the budget does not
hold is not run (that pass is the float32 VAE's, tiled).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from gpustd.nn import Module, ModuleList, Namespace
from gpustd.nn.offload import OffloadedError, parameter_bytes, restore
from gpustd.nn.residency import Residency

from ...models.tiled_vae import budget_tile, decode_tiled, untiled_bytes, vae_decode, vae_encode
from .guided_unet import unet_call

__all__ = ["MemoryMode", "MemoryPlan", "networks", "parse_size", "smallest_budget", "unet_fixed"]

GIB = float(1 << 30)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
def parse_size(text: str | int) -> int:
    """Bytes of a size as the flags write it: "4G", "2500M", "512MiB", "1.5GB", or a number of
    bytes. K/M/G/T are powers of 1024 (what GPU memory is sold in)."""
    if isinstance(text, int):
        value = text
    else:
        found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.I)
        if found is None:
            raise ValueError(f"{text!r} is not a size: write it as 4G, 2500M, 512MiB or a number "
                             "of bytes")
        value = int(float(found.group(1)) * _UNITS[found.group(2).upper()])
    if value <= 0:
        raise ValueError(f"a memory budget must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class MemoryMode:
    """Which of the WebUI's memory modes a pipeline runs in (see the module doc); all off:
    every weight stays on the GPU. `max_vram` in bytes."""

    medvram: bool = False
    lowvram: bool = False
    max_vram: int | None = None

    @classmethod
    def parse(cls, *, medvram: bool = False, lowvram: bool = False,
              max_vram: str | int | None = None) -> MemoryMode:
        """From the flags' values (max_vram as "4G", "2500M", ...)."""
        return cls(bool(medvram), bool(lowvram),
                   None if max_vram in (None, "") else parse_size(max_vram))

    def __bool__(self) -> bool:
        return self.medvram or self.lowvram or self.max_vram is not None

    @property
    def streams_unet(self) -> bool:
        return self.lowvram or self.max_vram is not None

    @property
    def label(self) -> str:
        """The flags as a command line writes them."""
        parts = [f for f, on in (("--medvram", self.medvram), ("--lowvram", self.lowvram)) if on]
        if self.max_vram is not None:
            parts.append(f"--max-vram {self.max_vram >> 20}M")
        return " ".join(parts) or "none"


def unet_blocks(unet: Module) -> list[Module]:
    """The UNet's streamed units: every resnet, transformer and resampler of its down, mid and
    up blocks, in the order they run."""
    blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]  # type: ignore[attr-defined]
    return [module for block in blocks for value in vars(block).values()
            if isinstance(value, ModuleList) for module in value]


def unet_fixed(unet: Module) -> Module:
    """What stays on the GPU while the UNet's blocks stream: every part of it that is in no
    block of `unet_blocks` (conv_in, the time and add embeddings, the norm and conv_out),
    gathered under one Namespace."""
    parts: Any = unet
    levels = [*parts.down_blocks, parts.mid_block, *parts.up_blocks]
    streamed = {id(parts.down_blocks), id(parts.mid_block), id(parts.up_blocks)}
    fixed = Namespace()
    for name, value in vars(unet).items():
        if not name.startswith("_") and id(value) not in streamed:
            setattr(fixed, name, value)
    for number, level in enumerate(levels):  # a block level's own parts, if any
        for name, value in vars(level).items():
            if not name.startswith("_") and not isinstance(value, ModuleList):
                setattr(fixed, f"level{number}_{name}", value)
    return fixed


def networks(pipe: Any) -> list[Module]:
    """The pipeline's networks: its text encoders, UNet and VAE."""
    return [*_text_encoders(pipe), pipe.unet, pipe.vae]


class _Steady:
    """Whether the UNet's last eager step under a budget moved no weight (so every block stays
    on the GPU across a step and the step may replay), and the capture to drop when a block
    leaves (its recorded weights go). Apart from the plan: the Residency's on_evict keeps it."""

    def __init__(self, captured: Any) -> None:
        self.captured, self.steady = captured, False

    def left(self) -> None:
        self.steady = False
        self.captured.reset()


class _BudgetStep:
    """--max-vram's UNet step. Eager (blocks streamed in as they run) until one step ran with
    no weight uploaded or evicted: the budget then holds the whole UNet across a step, and the
    next steps replay a capture of it, as the plain mode does, until a block leaves (the VAE
    coming in, or a new generation's text encoders), which drops the capture. A recording that
    finds a block gone (an eviction while it ran) is dropped and the step runs eagerly."""

    def __init__(self, plan: MemoryPlan, unet: Module) -> None:
        self.plan, self.unet = plan, unet
        # once a generation (it walks the parameters); a block leaving resets it in between
        self.captured = plan._unet_capture.of(unet)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        residency, state = self.plan.residency, self.plan._steady
        moved = residency.uploaded, residency.evictions
        if state.steady:
            try:
                out = self.captured(*args, **kwargs)
            except OffloadedError:
                state.left()
            else:
                if (residency.uploaded, residency.evictions) != moved:
                    state.left()  # a block left while it recorded: the replay would be stale
                return out
        out = unet_call(self.unet, *args, **kwargs)
        state.steady = (residency.uploaded, residency.evictions) == moved
        return out


def smallest_budget(pipe: Any) -> int:
    """The least --max-vram can be: the UNet's weights that never leave (conv_in, the
    embeddings, conv_out) and the largest unit's (a UNet block, the text encoders, the VAE),
    activations not counted."""
    blocks = unet_blocks(pipe.unet)
    fixed = parameter_bytes(pipe.unet) - sum(parameter_bytes(b) for b in blocks)
    units = [*blocks, *_text_encoders(pipe), pipe.vae]
    return fixed + max(parameter_bytes(u) for u in units)


def _text_encoders(pipe: Any) -> list[Module]:
    found = getattr(pipe, "text_encoders", None)
    return list(found.encoders) if found is not None else [pipe.text_encoder]


class MemoryPlan:
    """A pipeline's memory mode in effect: its Residency and the units in it. Made by
    `StableDiffusion.set_memory_mode`, with the pipeline's kept captures of its text encoder
    and UNet (reset where their units leave the GPU); the pipeline asks it for the UNet step
    and the VAE."""

    def __init__(self, pipe: Any, mode: MemoryMode, *, text_capture: Any,
                 unet_capture: Any, half: Any = None) -> None:
        self.mode = mode
        weight = pipe.unet.conv_in.weight
        self.device = weight.device
        # a float32 VAE's float16 twins (models.vae_half.HalfPasses), units as they come
        self.half, self._dtype = half, weight.dtype
        budget = mode.max_vram if mode.max_vram is not None else 0
        if mode.max_vram is not None and mode.max_vram < (least := smallest_budget(pipe)):
            raise ValueError(
                f"--max-vram {mode.max_vram / GIB:.3f} GiB cannot hold the model's largest part "
                f"with what always stays on the GPU: it needs at least {least / GIB:.3f} GiB "
                f"({-(-least // (1 << 20))} MiB) before any activations; give more")
        if mode.streams_unet:  # what stays, loaded to host memory (LoadOptions.offload)
            restore(unet_fixed(pipe.unet))
        self.residency = Residency(self.device, budget=budget, release=not mode.lowvram)
        try:  # a failure below must not leave the budget's cap set
            captures = text_capture.captured, unet_capture.captured
            # SDXL's two encoders move together; forward and forward_pooled both run _encode
            encoders = ModuleList(_text_encoders(pipe))
            # the text encoders and the VAE give their buffers back to the driver when they leave
            # (release=True): kept pooled under --lowvram, they would fill the pool with sizes no
            # UNet block takes (as in the flow plan: bench/NOTES.md, "--lowvram streamed slower")
            self.residency.add(encoders, name="text encoders", stream=False,
                               on_evict=captures[0].reset, release=True)
            for encoder in encoders:
                self.residency.stream(encoder, "_encode", unit=encoders)
            self._steady = _Steady(captures[1])
            if mode.streams_unet:
                captures[1].reset()  # the UNet runs eagerly now: a kept capture only pins memory
                for block in unet_blocks(pipe.unet):
                    # not loop=True: with the blocks a loop, bench lowvram's SD 1.5 at
                    # --max-vram 2G on an H100 needed 2.01 GiB (MemoryLimitError) where least
                    # recently used first runs within it (bench/NOTES.md, "SD's UNet blocks")
                    self.residency.add(block, name="UNet block", on_evict=self._steady.left)
            else:
                self.residency.add(pipe.unet, name="UNet", stream=False, on_evict=captures[1].reset)
            self.residency.add(pipe.vae, name="VAE", stream=False, release=True)
            self.residency.fit()  # within the budget from now on, not from the first unit used
        except BaseException:  # the units stay where they are (a model loaded to host: there)
            self.residency.close(bring_back=False)
            raise
        self._unet_capture = unet_capture

    def release(self) -> None:
        """Every unit back on the GPU and the forwards unwrapped (the mode switched off)."""
        self.residency.close()

    def unet_step(self, unet: Module) -> Any:
        """What a GuidedUNet calls per step: the kept capture with the UNet brought in
        (medvram), the UNet run eagerly while its blocks stream (lowvram), or under a budget
        eagerly until a step moves no weight, then replayed (_BudgetStep)."""
        if self.mode.max_vram is not None:
            return _BudgetStep(self, unet)
        if self.mode.streams_unet:
            return partial(unet_call, unet)
        self.residency.use(unet)
        return self._unet_capture.of(unet)

    def replace_vae(self, old: Module, new: Module) -> None:
        """`new` the VAE unit in place of `old` (a VAE file, or the VAE made float32), `old`
        no longer managed (its weights go with it)."""
        self.residency.remove(old)
        self.residency.add(new, name="VAE", stream=False, release=True)
        self.residency.fit()

    def _use_vae(self, vae: Module, extra: int = 0) -> None:
        """Bring `vae` in: the model's, a hires pass's own (Forge's hr_additional_modules,
        HiresModules.vae) or a float16 twin, made a unit like the model's the first time it
        comes."""
        if vae not in self.residency:
            self.residency.add(vae, name="another VAE (a hires pass's, a float16 copy)",
                               stream=False, release=True)
        self.residency.use(vae, extra=extra)

    def _half(self, vae: Module, shape: tuple[int, ...], part: str) -> bool:
        """Whether the pass goes through the float16 twins (as the plain mode's does)."""
        return self.half is not None and self.half.applies(vae, self._dtype, shape, part)

    def _fits(self, shape: tuple[int, ...], mode: Any, vae: Module) -> bool:
        """Bring `vae` in with room for its untiled `mode` pass over `shape`; whether the
        budget holds that pass (a twin's calibration is the untiled float32 pass)."""
        room = untiled_bytes(vae, shape, mode)  # type: ignore[arg-type]
        budget = self.mode.max_vram
        self._use_vae(vae, room if budget is not None else 0)
        return budget is None or room + self.device.memory_stats().allocated <= budget

    def vae_decode(self, vae: Module, latents: np.ndarray) -> np.ndarray:
        """tiled_vae.vae_decode with the VAE brought in, in tiles when the budget asks, and
        frugal with the pool (the memory modes trade the decode's speed for its reserve); a
        float32 VAE's by its float16 twin where the plain mode's is (the same picture)."""
        if self._half(vae, latents.shape, "decoder"):
            return self.half.decode(vae, latents, run=self._decode,
                                    use=partial(self._fits, latents.shape, "decode"))
        return self._decode(vae, latents)

    def _decode(self, vae: Module, latents: np.ndarray) -> np.ndarray:
        if not self._fits(latents.shape, "decode", vae):
            side = budget_tile(vae, latents.shape, self.mode.max_vram)  # type: ignore
            return decode_tiled(vae, latents, tile=side, offload=True)  # type: ignore[arg-type]
        return vae_decode(vae, latents, frugal=True)  # type: ignore[arg-type]

    def vae_encode(self, vae: Module, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """tiled_vae.vae_encode with the VAE brought in (by its float16 twin as vae_decode)."""
        if self._half(vae, pixels.shape, "encoder"):
            return self.half.encode(vae, pixels, run=self._encode,
                                    use=partial(self._fits, pixels.shape, "encode"))
        return self._encode(vae, pixels)

    def _encode(self, vae: Module, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._use_vae(vae)
        return vae_encode(vae, pixels)  # type: ignore[arg-type]
