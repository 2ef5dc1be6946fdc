"""WanPipeline's VAE passes: the frames out of the latent space, checked for NaN (not written as
black frames), and the passes that bring the VAE onto the GPU for its work (the first frame's
encodes too), where a float16 VAE that gives NaN or infinity is made float32 from its own
weights and the pass runs again, as `generate` does for pictures
(diffusion.pipelines.vae_float32; `--no-half-vae` starts float32)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from gpustd import asarray
from gpustd.nn.offload import offload as offload_weights

from ...models.wan_vae import AutoencoderKLWan
from ..finite import check_decoded
from ..vae_float32 import float32_copy, reverting

__all__ = ["WanVaePasses"]

T = TypeVar("T")


class WanVaePasses:
    """`decode`, `use_float32_vae` and the reverting VAE pass for WanPipeline (its base; and
    Kandinsky5VideoPipeline's, with its own `decode`)."""

    vae: AutoencoderKLWan
    offload: bool
    _memory: Any

    def on_gpu(self, network: Any) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError  # WanPipeline's: the network's weights on the GPU

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Videos (B, T, H, W, 3) in [0, 1] from the transformer's latents (B, C, F, h, w);
        VaeNonFiniteError where the VAE gave NaN or infinity (not black frames)."""
        vae = self.vae
        z = vae.denormalize(asarray(latents, dtype=vae.post_quant_conv.weight.dtype,
                                    device=vae.device))
        video = vae.decode(z).numpy().astype(np.float32)
        check_decoded(video, vae)
        return np.clip(video / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 4, 1)

    def use_float32_vae(self) -> bool:
        """Decode and encode with the VAE in float32 (diffusion.pipelines.vae_float32: the
        WebUI's revert, `--no-half-vae`), a copy from its own weights that takes its place
        under the memory mode or the offloading; False where it runs float32 already."""
        vae = float32_copy(self.vae)
        if vae is self.vae:
            return False
        if self._memory is not None:
            self._memory.replace_vae(self.vae, vae)
        elif self.offload:
            offload_weights(vae)
        self.vae = vae
        return True

    def _with_vae(self, run: Callable[[AutoencoderKLWan], T]) -> T:
        """`run(vae)` with the VAE on the GPU; where a float16 VAE gives NaN or infinity
        (VaeNonFiniteError), the VAE made float32, a VaeRevertWarning and `run` again with
        it, as `generate` does for pictures (vae_float32.reverting)."""
        def once() -> T:
            with self.on_gpu(self.vae):
                return run(self.vae)
        return reverting(self, None, once)
