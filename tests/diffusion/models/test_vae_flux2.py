"""FLUX.2's VAE against diffusers' AutoencoderKLFlux2 and Flux2KleinPipeline's latent
mapping on torch CPU (tiny random weights)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from diffusers import Flux2KleinPipeline
from flux2_tiny import FLUX2_VAE_TINY, tiny_flux2_vae
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.vae_flux2 import AutoencoderKLFlux2, patchify, unpatchify
from gpustd import asarray


def _ours(reference: torch.nn.Module, device: gpucore.Device) -> AutoencoderKLFlux2:
    vae = AutoencoderKLFlux2(dict(reference.config), device=device)
    vae.load_state_dict({k: v for k, v in state_dict(reference).items()
                         if k != "bn.num_batches_tracked"})
    return vae


def test_decode_equals_diffusers(device: gpucore.Device) -> None:
    """The transformer's latents (B, 16, 3, 5) -> pictures, as Flux2KleinPipeline decodes:
    the batch norm undone, unpatchified, decoded."""
    reference = tiny_flux2_vae()
    vae = _ours(reference, device)
    rng = np.random.default_rng(3)
    patches = rng.standard_normal((2, 4 * FLUX2_VAE_TINY["latent_channels"], 3, 5)
                                  ).astype(np.float32)
    with torch.no_grad():
        z = torch.from_numpy(patches)
        mean = reference.bn.running_mean.view(1, -1, 1, 1)
        std = torch.sqrt(reference.bn.running_var.view(1, -1, 1, 1)
                         + reference.config.batch_norm_eps)
        z = Flux2KleinPipeline._unpatchify_latents(z * std + mean)
        expected = reference.decode(z).sample.numpy()
    latents = vae.from_transformer(patches)
    assert_close(latents, z.numpy(), tol=1e-5)
    got = vae.decode(asarray(latents, device=device)).numpy()
    assert got.shape == (2, 3, 12, 20)
    assert_close(got, expected, tol=1e-3)
    # the statistics matter: decoding the un-normalized patches differs visibly
    plain = vae.decode(asarray(unpatchify(patches), device=device)).numpy()
    assert np.abs(plain - got).mean() > 0.05 * np.abs(got).mean()


def test_encode_equals_diffusers(device: gpucore.Device) -> None:
    """Pictures (1, 3, 12, 20) -> the posterior's mean in the transformer's space, as
    Flux2KleinPipeline encodes reference images (its mode, normalized)."""
    reference = tiny_flux2_vae()
    vae = _ours(reference, device)
    pixels = np.random.default_rng(4).uniform(-1, 1, (1, 3, 12, 20)).astype(np.float32)
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(pixels)).latent_dist
        z = Flux2KleinPipeline._patchify_latents(posterior.mode())
        mean = reference.bn.running_mean.view(1, -1, 1, 1)
        std = torch.sqrt(reference.bn.running_var.view(1, -1, 1, 1)
                         + reference.config.batch_norm_eps)
        expected = ((z - mean) / std).numpy()
    got_mean, _logvar = vae.encode(asarray(pixels, device=device))
    assert_close(vae.to_transformer(got_mean.numpy()), expected, tol=1e-3)


@pytest.mark.nodevice
def test_patches_round_trip_and_bad_config() -> None:
    x = np.random.default_rng(5).standard_normal((2, 3, 6, 8))
    assert np.array_equal(unpatchify(patchify(x)), x)
    assert patchify(x)[0, 1, 0, 0] == x[0, 0, 0, 1]  # channel c*4 + 2*i + j
    with pytest.raises(ValueError, match="patch_size"):
        AutoencoderKLFlux2({**FLUX2_VAE_TINY, "patch_size": (1, 1)})
