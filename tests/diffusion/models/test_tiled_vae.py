"""Tiled VAE decode/encode against diffusers' untiled AutoencoderKL on torch CPU: close to it,
closer than diffusers' own tiling, without seams at the tile borders, and used automatically
when the untiled pass would exceed the device's binding limit."""

from __future__ import annotations

import gc

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from sd_tiny import randomized, state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models import AutoencoderKL
from diffusion.models.tiled_vae import (
    decode_tiled,
    encode_tiled,
    needs_tiling,
    tile_size,
    untiled_bytes,
    vae_decode,
    vae_encode,
)
from gpustd.nn import padding_mode

# Three levels (8x fewer pixels would be SD's four; 4x keeps lavapipe fast), narrow channels.
CONFIG = dict(block_out_channels=(8, 8, 16), norm_num_groups=4, layers_per_block=1,
              latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 3,
              up_block_types=("UpDecoderBlock2D",) * 3)
FACTOR = 4
TILE, OVERLAP = 12, 6  # latent pixels: a 16x24 latent is 2x3 tiles
EXACT = 1e-3  # one tile: the untiled computation in another order; measured ~1e-6


@pytest.fixture(scope="module")
def models(first_device: gpucore.Device):
    reference = randomized(diffusers.AutoencoderKL(**CONFIG), 3)
    ours = AutoencoderKL(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    return reference, ours


def _smooth(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random values on a coarse grid, bicubically upsampled: spatially correlated, like real
    latents and images (white noise would hide how far a tile's edge reaches)."""
    coarse = np.random.default_rng(seed).standard_normal((*shape[:2], 5, 5)).astype(np.float32)
    return torch.nn.functional.interpolate(torch.from_numpy(coarse), size=shape[2:],
                                           mode="bicubic", align_corners=True).numpy()


@pytest.fixture(scope="module")
def latents() -> np.ndarray:
    return _smooth((1, 4, 16, 24), seed=0)


@pytest.fixture(scope="module")
def untiled(models, latents) -> np.ndarray:
    with torch.no_grad():
        return models[0].decode(torch.from_numpy(latents)).sample.numpy()


def _diffusers_tiled_decode(reference, latents: np.ndarray) -> np.ndarray:
    reference.enable_tiling()
    reference.tile_latent_min_size, reference.tile_sample_min_size = TILE, TILE * FACTOR
    reference.tile_overlap_factor = OVERLAP / TILE
    try:
        with torch.no_grad():
            return reference.decode(torch.from_numpy(latents)).sample.numpy()
    finally:
        reference.disable_tiling()


def _seam(image: np.ndarray, untiled: np.ndarray, borders: list[int]) -> float:
    """How much sharper the image's column-to-column steps are than the untiled image's at the
    tile borders (image columns), in units of the untiled image's mean step: a seam is a line
    of steps that the untiled image does not have."""
    def steps(x: np.ndarray) -> np.ndarray:  # mean |x[..., c + 1] - x[..., c]| per column c
        return np.abs(np.diff(x, axis=3)).mean(axis=(0, 1, 2))

    excess = np.abs(steps(image) - steps(untiled)) / steps(untiled).mean()
    return float(excess[[x - 1 for x in borders]].max())


def test_one_tile_is_the_untiled_pass(models, latents, untiled) -> None:
    """The tiled pass with one tile (the mid block tiled too) is the untiled computation, with
    the activations kept on the device (decode) or offloaded to the host (encode)."""
    reference, ours = models
    assert_close(decode_tiled(ours, latents, tile=24, untiled_mid=False), untiled, tol=EXACT)
    image = _smooth((1, 3, 32, 40), seed=1)
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(image)).latent_dist
    mean, logvar = encode_tiled(ours, image, tile=40, untiled_mid=False, offload=True)
    assert_close(mean, posterior.mean.numpy(), tol=EXACT)
    assert_close(logvar, posterior.logvar.numpy(), tol=EXACT)


def test_tiled_decode_is_close_and_seamless(models, latents, untiled) -> None:
    reference, ours = models
    tiled = decode_tiled(ours, latents, tile=TILE, overlap=OVERLAP)  # 2 x 3 tiles
    error = np.abs(tiled - untiled)
    theirs = np.abs(_diffusers_tiled_decode(reference, latents) - untiled)
    # measured: mean 0.018, max 0.26 on images of standard deviation 0.69; diffusers' tiling
    # 0.25 and 2.6 (random weights carry a tile edge's zero padding far; trained ones less)
    assert error.mean() < 0.03 and error.max() < 0.4, (error.mean(), error.max())
    assert error.mean() < 0.2 * theirs.mean() and error.max() < 0.5 * theirs.max()
    # tile edges 0-12, 6-18, 12-24 latent pixels, cores cut at 9 and 15: image columns x 4
    assert _seam(tiled, untiled, [FACTOR * x for x in (6, 9, 12, 15, 18)]) < 0.2  # ~0.07
    # the check sees seams: two halves decoded on their own and put side by side have one
    with torch.no_grad():
        halves = [reference.decode(torch.from_numpy(np.ascontiguousarray(half))).sample.numpy()
                  for half in np.split(latents, 2, axis=3)]
    assert _seam(np.concatenate(halves, axis=3), untiled, [FACTOR * TILE]) > 1.0  # ~3


def test_tiles_refuse_the_circular_padding(models, latents) -> None:
    """The WebUI's Tiling wraps the convs around the picture; in tiles they would wrap around
    each tile: refused in one line, where one tile (the whole picture) runs."""
    _, ours = models
    with padding_mode("circular"):
        with pytest.raises(ValueError, match=r"^tiling \(a seamless picture\) needs the VAE's "
                                             r"pass over the whole picture"):
            decode_tiled(ours, latents, tile=TILE, overlap=OVERLAP)
        assert np.isfinite(decode_tiled(ours, latents, tile=24, untiled_mid=False)).all()


def test_tiled_encode_is_close(models) -> None:
    reference, ours = models
    image = _smooth((1, 3, 64, 96), seed=2)
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(image)).latent_dist
    mean, logvar = encode_tiled(ours, image, tile=TILE * FACTOR, overlap=OVERLAP * FACTOR)
    for got, expected in ((mean, posterior.mean.numpy()), (logvar, posterior.logvar.numpy())):
        error = np.abs(got - expected)
        # measured mean 0.03, max 0.33 on latents of standard deviation 0.55 and 0.8
        assert error.mean() < 0.045 and error.max() < 0.5, (error.mean(), error.max())


def test_automatic_above_the_binding_limit(models, latents, untiled, first_device,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _, ours = models
    # the largest decoder tensor: 8 channels at 64x96 float32 = 192 KiB; allow 150 KiB
    monkeypatch.setitem(first_device.limits, "max-storage-buffer-binding-size", 150 << 10)
    assert needs_tiling(ours, latents.shape) and not needs_tiling(ours, (1, 4, 16, 16))
    with pytest.raises(gpucore.DeviceLimitError):
        ours.decode(gpustd.asarray(latents, device=first_device)).numpy()
    # half the limit: 8 channels at 4^2 x a tile's pixels in float32, 12^2 x 512 <= 75 KiB
    assert tile_size(ours) == 12
    decoded = vae_decode(ours, latents)  # tiles by itself
    assert np.abs(decoded - untiled).mean() < 0.03  # 12-pixel tiles overlapping by 6: 0.018
    image = np.zeros((1, 3, 64, 96), np.float32)
    assert needs_tiling(ours, image.shape, mode="encode")
    mean, _ = vae_encode(ours, image)
    assert mean.shape == (1, 4, 16, 24)


def test_decode_keeps_its_buffers_unless_frugal(models, latents, untiled, first_device) -> None:
    """A plain decode leaves its activations' buffers in the pool, so the next one makes none;
    a frugal one (the memory modes') drops them as its resolutions climb and makes them anew
    each time. Both decode the same picture."""
    _, ours = models
    first_device.empty_pool()  # what earlier tests left there could serve every size class
    made = []
    for frugal in (True, True, False, False):
        before = first_device.buffers_created
        decoded = vae_decode(ours, latents, frugal=frugal)
        made.append(first_device.buffers_created - before)
        assert_close(decoded, untiled, tol=EXACT)
    assert made[1] > 0 and made[3] == 0, made


def test_flow_max_vram_decodes_in_the_tiles_its_budget_holds(
        first_device: gpucore.Device, models, latents, untiled) -> None:
    """A flow model's decode under --max-vram (FlowMemoryPlan.decode): where the budget
    cannot hold the untiled pass beside the weights, in tiles whose activations fit, as close
    to the untiled picture as the tiled decode is (the test above); the untiled pass under
    the same budget stops at it."""
    from diffusion.pipelines.flow.flow_memory import FlowMemoryPlan, MemoryLayout
    from diffusion.pipelines.sd.memory import MemoryMode
    from gpustd.nn import Linear, ModuleList, Namespace
    from gpustd.nn.offload import parameter_bytes

    ours = models[1]

    def linear() -> Linear:
        layer = Linear(4, 4, device=first_device)
        layer.load_state_dict({"weight": np.eye(4, dtype=np.float32),
                               "bias": np.zeros(4, np.float32)})
        return layer

    transformer = Namespace()
    transformer.proj_out, transformer.transformer_blocks = linear(), ModuleList([linear()])
    text = linear()
    layout = MemoryLayout(transformer=transformer, blocks=(transformer.transformer_blocks,),
                          text_encoders=(text,), text_calls=((text, "forward"),), vae=ours)
    plain = vae_decode(ours, latents)
    gc.collect()  # the budget is the device's: what earlier tests left on it counts too, and
    first_device.empty_pool()  # garbage freed mid-decode would make room the budget lacks
    held = first_device.memory_stats().allocated
    room = untiled_bytes(ours, latents.shape)
    budget = held + parameter_bytes(transformer.proj_out) + parameter_bytes(ours) + room // 3
    plan = FlowMemoryPlan(layout, MemoryMode(max_vram=budget))
    try:
        first_device.reset_peak_memory()
        decoded = plan.decode(ours, latents)
        assert first_device.memory_stats().peak_reserved <= budget
        error = np.abs(decoded - untiled)
        assert error.mean() < 0.03 and error.max() < 0.4, (error.mean(), error.max())
        assert np.abs(decoded - plain).max() > EXACT  # it did tile
        with pytest.raises(gpucore.MemoryLimitError):
            ours.decode(gpustd.asarray(latents, device=first_device)).numpy()
    finally:
        plan.release()
