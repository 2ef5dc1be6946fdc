"""`--vae PATH`: a separate VAE (diffusers folder, LDM single file, diffusers single file) loaded
and decoded against diffusers' AutoencoderKL on torch CPU; bad files give errors naming them."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from ldm_files import ldm_vae
from safetensors.numpy import save_file
from sd_tiny import VAE_TINY, state_dict, tiny_vae
from support import assert_close

import gpucore
import gpustd
from diffusion.loaders import WeightsError
from diffusion.loaders.sd.vae_file import load_vae, vae_hash, vae_name, vae_near_checkpoint

# f32 through the tiny decoder: the worst element's |error| / (rms + |expected|)
# (support.assert_close's rule) measured on lavapipe and llvmpipe is 2.6e-6
TOL = 3e-5


@pytest.fixture(scope="module")
def reference():
    return tiny_vae(seed=11)


@pytest.fixture(scope="module")
def expected(reference) -> tuple[np.ndarray, np.ndarray]:
    latents = np.random.default_rng(5).standard_normal((1, 4, 6, 5)).astype(np.float32)
    with torch.no_grad():
        return latents, reference.decode(torch.from_numpy(latents)).sample.numpy()


def _decode(vae, latents: np.ndarray, device: gpucore.Device) -> np.ndarray:
    return vae.decode(gpustd.asarray(latents, device=device)).numpy()


def _model_config() -> dict:
    """The config of the VAE a --vae file replaces: the tiny model's, with its scaling factor."""
    return {**VAE_TINY, "layers_per_block": 1, "scaling_factor": 0.13025}


def test_folder(tmp_path: Path, reference, expected, first_device: gpucore.Device) -> None:
    reference.save_pretrained(tmp_path / "vae")
    vae = load_vae(tmp_path / "vae", device=first_device, config=_model_config())
    latents, decoded = expected
    assert_close(_decode(vae, latents, first_device), decoded, tol=TOL)
    assert vae.scaling_factor == reference.config.scaling_factor  # the folder's own config


@pytest.mark.parametrize("layout", ["ldm", "ldm-in-checkpoint", "diffusers"])
def test_single_file(tmp_path: Path, layout: str, reference, expected,
                     first_device: gpucore.Device) -> None:
    tensors = state_dict(reference)
    if layout != "diffusers":  # independent inverse of diffusers' LDM conversion
        tensors = ldm_vae(tensors)
        tensors["first_stage_model.loss.logvar"] = np.zeros((), np.float32)  # as in WebUI files
        if layout == "ldm":
            tensors = {k.removeprefix("first_stage_model."): v for k, v in tensors.items()}
        else:  # a whole checkpoint: its UNet keys are not the VAE's
            tensors["model.diffusion_model.out.2.bias"] = np.ones(4, np.float32)
    file = tmp_path / "tiny.vae.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(file))
    vae = load_vae(file, device=first_device, config=_model_config())
    latents, decoded = expected
    assert_close(_decode(vae, latents, first_device), decoded, tol=TOL)
    assert vae.scaling_factor == 0.13025  # the replaced model's config
    inferred = load_vae(file, device=first_device)  # no config: read from the shapes
    assert inferred.config["block_out_channels"] == list(VAE_TINY["block_out_channels"])
    assert_close(_decode(inferred, latents, first_device), decoded, tol=TOL)


def test_shapes_that_do_not_fit(tmp_path: Path, reference) -> None:
    file = tmp_path / "other.safetensors"
    save_file(ldm_vae(state_dict(reference)), str(file))
    wider = {**_model_config(), "block_out_channels": (32, 96)}
    ours = re.escape(str(list(VAE_TINY["block_out_channels"])))
    with pytest.raises(WeightsError, match=rf"other\.safetensors.*block_out_channels {ours} "
                                           r"\(the model's: \[32, 96\]\)"):
        load_vae(file, config=wider)
    reference.save_pretrained(tmp_path / "folder")
    with pytest.raises(WeightsError, match=r"config\.json.*latent_channels 4 \(the model's: 16\)"):
        load_vae(tmp_path / "folder", config={**_model_config(), "latent_channels": 16})


def test_bad_files(tmp_path: Path) -> None:
    pickle = tmp_path / "vae-ft-mse.vae.pt"
    pickle.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(WeightsError, match=r"vae-ft-mse\.vae\.pt: a pickle, but not a torch"):
        load_vae(pickle)
    with pytest.raises(WeightsError, match=r"missing\.safetensors: VAE file not found"):
        load_vae(tmp_path / "missing.safetensors")
    unet_only = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.alpha": np.ones((), np.float32)}, str(unet_only))
    with pytest.raises(WeightsError, match=r"lora\.safetensors: not a VAE.*lora_unet_down\.alpha"):
        load_vae(unet_only)
    with pytest.raises(WeightsError, match=r"empty.*config\.json: required file is missing"):
        (tmp_path / "empty").mkdir()
        load_vae(tmp_path / "empty")


def test_infotext_name_and_hash(tmp_path: Path) -> None:
    file = tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors"
    file.write_bytes(b"any bytes" * 1000)
    assert vae_name(file) == "vae-ft-mse-840000-ema-pruned.safetensors"
    assert vae_hash(file) == hashlib.sha256(b"any bytes" * 1000).hexdigest()[:10]


def test_vae_near_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "anything-v3.safetensors"
    assert vae_near_checkpoint(checkpoint) is None
    (tmp_path / "anything-v3.vae.safetensors").write_bytes(b"")
    (tmp_path / "other.vae.safetensors").write_bytes(b"")
    assert vae_near_checkpoint(checkpoint) == tmp_path / "anything-v3.vae.safetensors"
    (tmp_path / "anything-v3.vae.pt").write_bytes(b"")  # the WebUI looks for .vae.pt first
    assert vae_near_checkpoint(checkpoint) == tmp_path / "anything-v3.vae.pt"
