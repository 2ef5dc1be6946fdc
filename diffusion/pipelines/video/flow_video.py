"""What the flow-matching video families with their own text encoders (Kandinsky 5 Video,
HunyuanVideo 1.5, Motif-Video) share around their calls: the memory modes over the family's
flow_memory layout, each network's weights on the GPU in turn under `offload`, the
transformer as LoRAs and the contract see it, the settings every call checks, and the frames
from latents divided by the VAE's scaling factor (Motif-Video's Wan VAE: its own `decode`,
by latents_mean / latents_std). diffusers writes these again in each pipeline (`enable_model_cpu_
offload`, `check_inputs`, the decode at the end of `__call__`); here the families differ only
in the methods they override."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from gpustd import asarray
from gpustd.nn.offload import offload as offload_weights
from gpustd.nn.offload import restore as restore_weights

from ...models.step_cache import StepCache
from ...noise.rng import RNG_SOURCES
from ..contract import Denoisers
from ..finite import check_decoded, check_latents
from ..flow.flow_memory import FlowMemoryPlan, MemoryLayout
from ..sd.memory import MemoryMode
from .wan_refuse import check_frame_count
from .wan_vae_passes import WanVaePasses

__all__ = ["FlowVideoPipeline", "prompt_list"]


def prompt_list(prompt: str | Sequence[str]) -> list[str]:
    """`prompt` (one or a list) as a list; ValueError in one line for anything else."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompt must be a string or a list of strings")
    return prompts


class FlowVideoPipeline(WanVaePasses):
    """The shared part of a flow video family's pipeline (module docstring). A family sets
    `family` (the name its errors say), `transformer`, `vae`, `offload`, `image_to_video`
    and `_memory` (None), and says `networks` (what offloading moves) and `memory_layout`."""

    family = ""
    transformer: Any
    vae: Any  # type: ignore[assignment]  # the family's (WanVaePasses' passes take any)
    image_to_video: bool
    _memory: FlowMemoryPlan | None

    def networks(self) -> tuple[Any, ...]:
        raise NotImplementedError  # the family's: every network it loaded

    def memory_layout(self) -> MemoryLayout:
        raise NotImplementedError  # the family's flow_memory layout

    @property
    def memory_mode(self) -> MemoryMode | None:
        return None if self._memory is None else self._memory.mode

    def set_memory_mode(self, mode: MemoryMode) -> None:
        """Run in the WebUI's --medvram / --lowvram / --max-vram mode (flow_memory over
        `memory_layout`: the text encoders one unit, the transformer whole or its blocks
        streamed, the VAE); all off: every weight on the GPU, or each network whole in turn
        where loaded with `offload`. No network runs from a capture, so the frames are the
        plain mode's, bitwise."""
        if self._memory is not None:
            self._memory.release()
            self._memory = None
        if mode:
            self._memory = FlowMemoryPlan(self.memory_layout(), mode)

    def _next_phase(self) -> None:
        """Under a memory mode, the steps or the decode begin: the units of the phase before
        leave and the pool is emptied (WanMemoryPlan.next_phase says why: at a budget, idle
        buffers the driver frees late)."""
        if self._memory is not None:
            self._memory.residency.evict_all()
            self._memory.residency.device.empty_pool()

    @contextlib.contextmanager
    def on_gpu(self, *networks: Any) -> Iterator[None]:
        """The `networks`' weights on the GPU for the block (offloading: the others' in host
        memory, then they go back there; under a memory mode its units come in as they
        run)."""
        if not self.offload or self._memory is not None:
            yield
            return
        for other in self.networks():
            offload_weights(other)
        for network in networks:
            restore_weights(network)
        try:
            yield
        finally:
            for network in networks:
                offload_weights(network)

    def lora_targets(self) -> Any:
        """What a `LoraManager` patches: the transformer (its LoRAs' diffusers/PEFT
        `transformer.` keys, or a family's original layout's)."""
        return SimpleNamespace(unet=self.transformer, transformer=self.transformer)

    @property
    def denoisers(self) -> Denoisers:
        """The transformer, as a contract's pipeline says it."""
        return Denoisers((self.transformer,), "transformer")

    @property
    def temporal_factor(self) -> int:
        return int(self.vae.temporal_compression_ratio)

    @property
    def size_multiple(self) -> int:
        raise NotImplementedError  # the family's: what height and width must be multiples of

    def check(self, *, height: int, width: int, num_frames: int, steps: int, rng: str,
              sampler: str, cache: StepCache | None, image: Any = None) -> None:
        """ValueError in one line for a setting this pipeline cannot run."""
        check_frame_count(num_frames, self.temporal_factor)
        if self.image_to_video and image is None:
            raise ValueError(f"this {self.family} model animates a picture: give its first "
                             "frame (img2vid --image)")
        if not self.image_to_video and image is not None:
            raise ValueError(f"this {self.family} model makes videos from text only: use "
                             "txt2vid, without a picture")
        multiple = self.size_multiple
        if height < multiple or width < multiple or height % multiple or width % multiple:
            raise ValueError(f"width and height must be multiples of {multiple} for "
                             f"{self.family}, got {width}x{height}")
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if rng not in RNG_SOURCES:
            raise ValueError(f"rng must be one of {RNG_SOURCES}, got {rng!r}")
        if sampler != "diffusers":
            raise ValueError(f"{self.family} runs its folder's scheduler (flow-match "
                             f"Euler): use --sampler diffusers, not {sampler!r}")
        if cache is not None and cache.spec.kind != "fbc":
            raise ValueError(f"{self.family} runs First Block Cache (fbc:0.12), not "
                             f"{cache.spec.kind} (its tables are Wan's)")

    def _frames(self, latents: np.ndarray) -> np.ndarray:
        """The last step's latents, checked (NaN said, not decoded into black frames), decoded
        in the decode's phase with the VAE on the GPU (float32 again where a float16 VAE gives
        NaN: WanVaePasses)."""
        check_latents(latents, self)
        self._next_phase()
        return self._with_vae(lambda _: self.decode(latents))

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Videos (B, T, H, W, 3) in [0, 1] from latents (B, C, F, h, w): divided by the VAE's
        scaling factor and decoded, as the diffusers pipelines decode; VaeNonFiniteError where
        the VAE gave NaN or infinity (not black frames)."""
        vae = self.vae
        weight = next(iter(vae.parameters()))
        z = asarray(latents / np.float32(vae.scaling_factor), dtype=weight.dtype,
                    device=weight.device)
        video = vae.decode(z).numpy().astype(np.float32)
        check_decoded(video, vae)
        return np.clip(video / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 4, 1)
