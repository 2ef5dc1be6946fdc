"""A float32 VAE run in float16 on the matrix units, its activations kept in f16's range by a
power-of-two scale folded into its weights: the decoder (each picture) and the encoder (img2img,
inpaint, a hires pass after an upscaler).

SDXL's VAE is kept in float32 (`force_upcast`: its activations pass float16's 65504), so its
decode ran on the portable float32 convs: 413 ms of an H100 at 1024 px against 135 ms for the
same decoder in float16 (bench/NOTES.md, "Where a warm SDXL picture's time goes"). Every
activation that overflows is one a GroupNorm reads next (the residual stream, each resnet's
first conv's output), and a GroupNorm's output does not change when its input is scaled by s
and its eps by s². The convs are linear. So the decoder runs exactly (up to f16 rounding) with
those activations scaled by s = 2^-k: conv_in, each resnet's two convs and the attention's
output projection take s on their weights and biases, a projected shortcut and the
resamplers' convs on their biases (their inputs are already scaled), every GroupNorm's eps
takes s², and conv_out, which reads a GroupNorm's output, gives the picture unscaled. The
encoder is built of the same layers in the other order (downsamplers for upsamplers, the mid
block last), its conv_out as unscaled: its twin takes the same scales.

k comes from a float32 pass over the first input that walks the layers and reads the largest
magnitude any of those activations reaches (`calibrate`; that pass is the first picture's):
k brings it under 2^12, 16 times short of f16's largest value. The twin is built at the second
pass (a process that decodes once pays nothing for it); the decoder and the encoder are
calibrated and twinned each on its own. A later pass that still overflows (its output not
finite) is run again in float32, which calibrates anew. diffusers runs this VAE in float32
with cuDNN's TF32 convs, whose inputs keep f16's 10-bit mantissa. AVX_VAE_FLOAT32=1 keeps
every pass in float32 (the WebUI's --no-half-vae).
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from gpustd import Tensor, asarray
from gpustd import abs as tensor_abs
from gpustd.gemm import matrix_units
from gpustd.nn import GroupNorm, Module, deferred
from gpustd.reduction import max as tensor_max

from . import AutoencoderKL
from .layers import Attention, ResnetBlock2D
from .tiled_vae import needs_tiling, vae_decode, vae_encode
from .vae import _attend

__all__ = ["ENV", "LIMIT_LOG2", "PARTS", "HalfPasses", "Part", "calibrate", "half_twin"]

Part = Literal["decoder", "encoder"]
PARTS: tuple[Part, ...] = ("decoder", "encoder")
ENV = "AVX_VAE_FLOAT32"
LIMIT_LOG2 = 12  # scaled activations stay under 2^12 (f16's largest is 65504, ~2^16)
# weights and biases (key endings) of a part that take the scale s: their outputs are the
# scaled activations; biases only where the input is already scaled
_SCALED = (".conv_in.", ".conv1.", ".conv2.", ".to_out.0.")
_SCALED_BIAS = (".conv_shortcut.bias", ".conv.bias")  # .conv: the resamplers' convs
_QUANT = {"decoder": "post_quant_conv.", "encoder": "quant_conv."}  # each part's 1x1 conv


def _layers(vae: AutoencoderKL, part: Part) -> list[Module]:
    """The part's layers between conv_in and its closing norm and conv_out, in order."""
    coder = getattr(vae, part)
    mid = coder.mid_block
    middle = [mid.resnets[0], mid.attentions[0], mid.resnets[1]]
    if part == "decoder":
        return [*middle, *(layer for block in coder.up_blocks for layer in block.layers())]
    return [*(layer for block in coder.down_blocks for layer in block.layers()), *middle]


def calibrate(vae: AutoencoderKL, x: Tensor, part: Part = "decoder") -> tuple[Tensor, float]:
    """The part's pass over `x` in the VAE's own dtype, layer by layer (the same ops): the
    decoder's picture (vae.decode(x)) or the encoder's moments (quant_conv(encoder(x)), mean
    and logvar stacked on the channels); and the largest magnitude of the activations a
    GroupNorm reads (the stream, each resnet's conv1 output). The maxima stay on the device
    until the end: one wait, not one a layer."""
    coder, maxima = getattr(vae, part), []

    def seen(x: Tensor) -> Tensor:
        maxima.append(tensor_max(tensor_abs(x)))
        return x

    if part == "decoder":
        x = vae.post_quant_conv(x)
    x = seen(coder.conv_in(x))
    for layer in _layers(vae, part):
        if isinstance(layer, ResnetBlock2D):
            x = seen(layer(x, inner=seen))
        elif isinstance(layer, Attention):
            x = seen(_attend(layer, x))
        else:
            x = seen(layer(x))
    out = coder.conv_out(x, prologue=coder.conv_norm_out.prologue(x, silu=True))
    if part == "encoder":
        out = vae.quant_conv(out)
    return out, max(float(m.numpy()) for m in maxima)


def half_twin(vae: AutoencoderKL, largest: float, part: Part = "decoder"
              ) -> tuple[AutoencoderKL, int]:
    """The float16 VAE whose `part` (with its quant conv) has its GroupNorm-read activations
    scaled by 2^-k so that `largest` comes under 2^LIMIT_LOG2 (module doc), and k. Only that
    part is loaded (the other's parameters stay unallocated)."""
    k = max(0, math.ceil(math.log2(max(largest, 1.0))) - LIMIT_LOG2)
    s = 2.0 ** -k
    state = {}
    for key, tensor in vae.named_parameters():
        if not key.startswith((f"{part}.", _QUANT[part])):
            continue
        value = tensor.numpy().astype(np.float32)
        if key.startswith(f"{part}.") and (any(p in key for p in _SCALED)
                                           or key.endswith(_SCALED_BIAS)):
            value = value * s
        state[key] = value
    device = getattr(vae, part).conv_in.weight.device
    with deferred():
        twin = AutoencoderKL(vae.config, dtype=np.float16, device=device)
    twin.load_state_dict(state, strict=False)
    for norm in _norms(twin, part):
        norm.eps *= s * s
    return twin, k


def _norms(vae: AutoencoderKL, part: Part) -> list[GroupNorm]:
    """Every GroupNorm of the part: each reads a scaled activation."""
    norms = [getattr(vae, part).conv_norm_out]
    for layer in _layers(vae, part):
        if isinstance(layer, ResnetBlock2D):
            norms += [layer.norm1, layer.norm2]
        elif isinstance(layer, Attention):
            norms.append(layer.group_norm)
    return norms


def _untiled(vae: AutoencoderKL) -> bool:
    """The plain mode's `use`: the VAE is on the GPU and its untiled pass is what runs."""
    return True


class HalfPasses:
    """A pipeline's float16 decodes and encodes by its float32 VAEs (module doc), where they
    `apply`: a VAE part's first pass is its float32 calibration, the next builds its scaled
    twin (so a process that decodes once pays no twin) and runs by it, as every later one
    does."""

    def __init__(self) -> None:
        self._largest: dict[Part, weakref.WeakKeyDictionary[Any, float]] = {
            part: weakref.WeakKeyDictionary() for part in PARTS}
        self._twins: dict[Part, weakref.WeakKeyDictionary[Any, AutoencoderKL]] = {
            part: weakref.WeakKeyDictionary() for part in PARTS}
        self.scales: dict[tuple[int, Part], int] = {}  # (id(vae), part) -> k of its twin

    @staticmethod
    def applies(vae: Any, dtype: Any, shape: tuple[int, ...], part: Part = "decoder") -> bool:
        """A float32 VAE that asks for float32 (`force_upcast`) in a float16 pipeline, on matrix
        units, not tiled for an input of `shape`, and not turned off by AVX_VAE_FLOAT32=1."""
        weight = getattr(vae, part).conv_in.weight
        return (os.environ.get(ENV) != "1" and np.dtype(dtype) == np.float16
                and weight.dtype == np.float32 and bool(vae.force_upcast)
                and matrix_units.available(weight.device)
                and not needs_tiling(vae, shape, mode="decode" if part == "decoder" else "encode"))

    def decode_or(self, plain: Callable[..., np.ndarray], dtype: Any, vae: AutoencoderKL,
                  latents: np.ndarray) -> np.ndarray:
        """`decode` where it `applies` (dtype: the pipeline's), else `plain(vae, latents)`
        (the caller's vae_decode)."""
        if self.applies(vae, dtype, latents.shape):
            return self.decode(vae, latents)
        return plain(vae, latents)

    def encode_or(self, plain: Callable[..., tuple[np.ndarray, np.ndarray]], dtype: Any,
                  vae: AutoencoderKL, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`encode` where it `applies`, else `plain(vae, images)` (the caller's vae_encode)."""
        if self.applies(vae, dtype, images.shape, "encoder"):
            return self.encode(vae, images)
        return plain(vae, images)

    def decode(self, vae: AutoencoderKL, latents: np.ndarray, *,
               run: Callable[[AutoencoderKL, np.ndarray], np.ndarray] = vae_decode,
               use: Callable[[AutoencoderKL], bool] = _untiled) -> np.ndarray:
        """Float32 host images of `latents` (as vae_decode): by the twin once calibrated, or
        in float32 where not yet or where the twin's picture is not finite (calibrating
        anew). A memory mode (diffusion.pipelines.sd.memory) runs the twin by `run` (the
        twin brought in, tiled where its budget asks) and calibrates where `use(vae)`, which
        brings the VAE in, says its untiled pass fits; where not, `run(vae, latents)`."""
        twin = self._twin(vae, "decoder")
        if twin is not None:
            images = run(twin, latents)
            if np.isfinite(images).all():
                return images
            del self._twins["decoder"][vae]
        if not use(vae):
            return run(vae, latents)
        return self._calibrate(vae, latents, "decoder")

    def encode(self, vae: AutoencoderKL, images: np.ndarray, *,
               run: Callable[[AutoencoderKL, np.ndarray], tuple[np.ndarray, np.ndarray]]
               = vae_encode, use: Callable[[AutoencoderKL], bool] = _untiled
               ) -> tuple[np.ndarray, np.ndarray]:
        """Float32 host (mean, logvar) of `images` (as vae_encode), as `decode` decodes."""
        twin = self._twin(vae, "encoder")
        if twin is not None:
            mean, logvar = run(twin, images)
            if np.isfinite(mean).all() and np.isfinite(logvar).all():
                return mean, logvar
            del self._twins["encoder"][vae]
        if not use(vae):
            return run(vae, images)
        moments = self._calibrate(vae, images, "encoder")
        latent = vae.config["latent_channels"]
        return moments[:, :latent].copy(), moments[:, latent:].copy()

    def forget_twins(self) -> None:
        """Drop every twin (their calibrations stay: the next pass builds a twin again). A
        pipeline switching memory modes calls it: a twin made outside a mode is no unit of
        the mode's, and one made inside would stay on the GPU after it."""
        for twins in self._twins.values():
            twins.clear()

    def _twin(self, vae: AutoencoderKL, part: Part) -> AutoencoderKL | None:
        """The part's twin: built now where the part is calibrated and has none."""
        twin = self._twins[part].get(vae)
        if twin is None and vae in self._largest[part]:
            twin, self.scales[id(vae), part] = half_twin(vae, self._largest[part][vae], part)
            self._twins[part][vae] = twin
        return twin

    def _calibrate(self, vae: AutoencoderKL, x: np.ndarray, part: Part) -> np.ndarray:
        weight = getattr(vae, part).conv_in.weight
        out, self._largest[part][vae] = calibrate(
            vae, asarray(x, dtype=weight.dtype, device=weight.device), part)
        return out.numpy().astype(np.float32)
