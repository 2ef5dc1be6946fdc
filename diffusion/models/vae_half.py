"""A float32 VAE decoded in float16 on the matrix units, its activations kept in f16's range by
a power-of-two scale folded into its weights.

SDXL's VAE is kept in float32 (`force_upcast`: its activations pass float16's 65504), so its
decode ran on the portable float32 convs: 413 ms of an H100 at 1024 px against 135 ms for the
same decoder in float16 (bench/NOTES.md, "Where a warm SDXL picture's time goes"). Every
activation that overflows is one a GroupNorm reads next (the residual stream, each resnet's
first conv's output), and a GroupNorm's output does not change when its input is scaled by s
and its eps by s². The convs are linear. So the decoder runs exactly (up to f16 rounding) with
those activations scaled by s = 2^-k: conv_in, each resnet's two convs and the attention's
output projection take s on their weights and biases, a projected shortcut and the
upsamplers' convs on their biases (their inputs are already scaled), every GroupNorm's eps
takes s², and conv_out, which reads a GroupNorm's output, gives the picture unscaled.

k comes from a float32 decode of the first latents that walks the layers and reads the largest
magnitude any of those activations reaches (`calibrate`; that decode is the first picture's):
k brings it under 2^12, 16 times short of f16's largest value. The twin is built at the second
decode (a process that decodes once pays nothing for it). A later decode that still overflows
(its picture not finite) is decoded again in float32, which calibrates anew. diffusers
decodes this VAE in float32 with cuDNN's TF32 convs, whose inputs keep f16's 10-bit mantissa.
AVX_VAE_FLOAT32=1 keeps every decode in float32 (the WebUI's --no-half-vae).
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from gpustd import Tensor, asarray
from gpustd import abs as tensor_abs
from gpustd.gemm import matrix_units
from gpustd.nn import GroupNorm, deferred
from gpustd.reduction import max as tensor_max

from . import AutoencoderKL
from .layers import ResnetBlock2D
from .tiled_vae import needs_tiling, vae_decode
from .vae import _attend

__all__ = ["ENV", "LIMIT_LOG2", "HalfDecodes", "calibrate", "half_twin"]

ENV = "AVX_VAE_FLOAT32"
LIMIT_LOG2 = 12  # scaled activations stay under 2^12 (f16's largest is 65504, ~2^16)
# weights and biases (key endings) that take the scale s: their outputs are the scaled
# activations; biases only where the input is already scaled
_SCALED = ("decoder.conv_in.", ".conv1.", ".conv2.", ".to_out.0.")
_SCALED_BIAS = (".conv_shortcut.bias", ".conv.bias")  # .conv: the upsamplers' convs


def calibrate(vae: AutoencoderKL, latents: Tensor) -> tuple[Tensor, float]:
    """vae.decode(latents) in its own dtype, layer by layer (the same ops), and the largest
    magnitude of the activations a GroupNorm reads (the stream, each resnet's conv1 output).
    The maxima stay on the device until the end: one wait, not one a layer."""
    decoder, maxima = vae.decoder, []

    def seen(x: Tensor) -> Tensor:
        maxima.append(tensor_max(tensor_abs(x)))
        return x

    def layer_of(layer: Any, x: Tensor) -> Tensor:
        if isinstance(layer, ResnetBlock2D):
            return seen(layer(x, inner=seen))
        return seen(layer(x))

    mid = decoder.mid_block
    x = seen(decoder.conv_in(vae.post_quant_conv(latents)))
    x = layer_of(mid.resnets[0], x)
    x = seen(_attend(mid.attentions[0], x))
    x = layer_of(mid.resnets[1], x)
    for block in decoder.up_blocks:
        for layer in block.layers():
            x = layer_of(layer, x)
    image = decoder.conv_out(x, prologue=decoder.conv_norm_out.prologue(x, silu=True))
    return image, max(float(m.numpy()) for m in maxima)


def half_twin(vae: AutoencoderKL, largest: float) -> tuple[AutoencoderKL, int]:
    """The float16 decoder of `vae` whose GroupNorm-read activations are scaled by 2^-k so that
    `largest` comes under 2^LIMIT_LOG2 (module doc), and k. Only the decoder and
    post_quant_conv are loaded (the encoder's parameters stay unallocated)."""
    k = max(0, math.ceil(math.log2(max(largest, 1.0))) - LIMIT_LOG2)
    s = 2.0 ** -k
    state = {}
    for key, tensor in vae.named_parameters():
        if not key.startswith(("decoder.", "post_quant_conv.")):
            continue
        value = tensor.numpy().astype(np.float32)
        if any(part in key for part in _SCALED) or key.endswith(_SCALED_BIAS):
            value = value * s
        state[key] = value
    device = vae.decoder.conv_in.weight.device
    with deferred():
        twin = AutoencoderKL(vae.config, dtype=np.float16, device=device)
    twin.load_state_dict(state, strict=False)
    for norm in _norms(twin):
        norm.eps *= s * s
    return twin, k


def _resnets(vae: AutoencoderKL) -> list[ResnetBlock2D]:
    decoder = vae.decoder
    return [*decoder.mid_block.resnets, *(layer for block in decoder.up_blocks
                                          for layer in block.layers()
                                          if isinstance(layer, ResnetBlock2D))]


def _norms(vae: AutoencoderKL) -> list[GroupNorm]:
    """Every GroupNorm of the decoder: each reads a scaled activation."""
    decoder = vae.decoder
    return [decoder.conv_norm_out, decoder.mid_block.attentions[0].group_norm,
            *(norm for resnet in _resnets(vae) for norm in (resnet.norm1, resnet.norm2))]


class HalfDecodes:
    """A pipeline's float16 decodes of its float32 VAEs (module doc), where they `apply`:
    a VAE's first decode is its float32 calibration, the next builds its scaled twin (so a
    process that decodes once pays no twin) and decodes by it, as every later one does."""

    def __init__(self) -> None:
        self._largest: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._twins: weakref.WeakKeyDictionary[Any, AutoencoderKL] = weakref.WeakKeyDictionary()
        self.scales: dict[int, int] = {}  # id(vae) -> k of its twin (what the tests read)

    @staticmethod
    def applies(vae: Any, dtype: Any, latent_shape: tuple[int, ...]) -> bool:
        """A float32 VAE that asks for float32 (`force_upcast`) in a float16 pipeline, on matrix
        units, not tiled, and not turned off by AVX_VAE_FLOAT32=1."""
        weight = vae.decoder.conv_in.weight
        return (os.environ.get(ENV) != "1" and np.dtype(dtype) == np.float16
                and weight.dtype == np.float32 and bool(vae.force_upcast)
                and matrix_units.available(weight.device)
                and not needs_tiling(vae, latent_shape, mode="decode"))

    def decode_or(self, plain: Callable[..., np.ndarray], dtype: Any, vae: AutoencoderKL,
                  latents: np.ndarray) -> np.ndarray:
        """`decode` where it `applies` (dtype: the pipeline's), else `plain(vae, latents)`
        (the caller's vae_decode)."""
        if self.applies(vae, dtype, latents.shape):
            return self.decode(vae, latents)
        return plain(vae, latents)

    def decode(self, vae: AutoencoderKL, latents: np.ndarray) -> np.ndarray:
        """Float32 host images of `latents` (as vae_decode): by the twin once calibrated, or
        in float32 where not yet or where the twin's picture is not finite (calibrating
        anew)."""
        twin = self._twins.get(vae)
        if twin is None and vae in self._largest:
            twin, self.scales[id(vae)] = half_twin(vae, self._largest[vae])
            self._twins[vae] = twin
        if twin is not None:
            images = vae_decode(twin, latents)
            if np.isfinite(images).all():
                return images
            del self._twins[vae]
        weight = vae.decoder.conv_in.weight
        image, self._largest[vae] = calibrate(vae, asarray(latents, dtype=weight.dtype,
                                                           device=weight.device))
        return image.numpy().astype(np.float32)
