"""`--vae FILE` for the families whose VAE is their own: FLUX.2's flux2-vae.safetensors,
Qwen-Image's qwen_image_vae.safetensors (Wan 2.1's names) and Z-Image's (FLUX's
ae.safetensors), each written from the tiny folder's VAE in the layout its users download,
decoding the folder's latents bitwise as the folder's VAE does; FLUX.2's through the command
line too, the file named in the infotext; another family's VAE
refused in one line that says what to give."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
from flux2_tiny import tiny_flux2_pipeline
from qwenimage_tiny import QWENIMAGE_VAE_TINY, tiny_qwenimage_pipeline
from safetensors.torch import save_file
from vae_layouts import flux2_ae, flux_ae, wan_original
from zimage_tiny import tiny_zimage_pipeline

import diffusion.cli.main as cli
import gpucore
from diffusion.infotext import read_infotext
from diffusion.loaders.errors import WeightsError
from diffusion.pipelines.load import load_pipeline
from gpustd import asarray

FILES = ("txt2img", "--prompt", "a red circle", "--width", "24", "--height", "16", "--steps",
         "2", "--sampler", "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32")


@pytest.fixture(scope="module")
def vae_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """family -> (its tiny folder, its VAE file)."""
    root = tmp_path_factory.mktemp("flow-vae-files")
    flux2 = tiny_flux2_pipeline(root, distilled=True)
    qwen = tiny_qwenimage_pipeline(root)
    zimage = tiny_zimage_pipeline(root)
    files = {"flux2": (root / "flux2-klein", root / "flux2-vae.safetensors",
                       flux2_ae(flux2.vae)),
             "qwen-image": (root / "qwen-image", root / "qwen_image_vae.safetensors",
                            wan_original(qwen.vae, QWENIMAGE_VAE_TINY["num_res_blocks"])),
             "z-image": (root / "z-image-turbo", root / "ae.safetensors", flux_ae(zimage.vae))}
    for _folder, path, tensors in files.values():
        save_file(tensors, str(path))
    return {family: (folder, path) for family, (folder, path, _t) in files.items()}


def _decoded(model: Any, latents: np.ndarray) -> np.ndarray:
    vae = model.pipe.vae
    if hasattr(model.pipe, "decode"):  # FLUX.2's and Qwen-Image's own latent space
        return np.asarray(model.pipe.decode(latents))
    weight = vae.decoder.conv_in.weight
    return vae.decode(asarray(latents, dtype=weight.dtype, device=weight.device)).numpy()


@pytest.mark.parametrize("family", ["flux2", "qwen-image", "z-image"])
def test_vae_file_decodes_as_the_folders(first_device: gpucore.Device,
                                         vae_files: dict[str, tuple[Path, Path]],
                                         family: str) -> None:
    folder, file = vae_files[family]
    model = load_pipeline(folder, device=first_device)
    channels = model.latent_channels
    latents = np.random.default_rng(5).standard_normal((1, channels, 2, 3)).astype(np.float32)
    own = model.pipe.vae
    expected = _decoded(model, latents)
    model.use_vae(file)
    assert model.pipe.vae is not own
    np.testing.assert_array_equal(_decoded(model, latents), expected)
    assert model.modules[-1] == file.stem
    other = next(path for name, (_f, path) in vae_files.items() if name != family)
    with pytest.raises(WeightsError, match=f"{other.name} holds .*; .* decodes with") as caught:
        model.use_vae(other)
    assert "\n" not in str(caught.value)


def test_flux2_vae_from_the_cli(first_device: gpucore.Device,
                                vae_files: dict[str, tuple[Path, Path]], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """--vae reaches the model (its decode is the folder's, above) and the infotext."""
    folder, file = vae_files["flux2"]
    code = cli.main([*FILES, "--model", str(folder), "--vae", str(file),
                     "--out", str(tmp_path / "vae.png")])
    out, err = capsys.readouterr()
    assert code == 0, err
    text = read_infotext(out.strip())
    assert text is not None and "Module 1: flux2-vae" in text


@pytest.mark.nodevice
def test_wan_names_as_diffusers_converts_them(tmp_path: Path) -> None:
    """At Wan 2.1's real depth (4 levels, 2 residual blocks each; narrow), the original names
    written here are the ones diffusers' convert_wan_vae_to_diffusers reads, and ours map
    them to the same diffusers names."""
    import diffusers
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    from diffusion.loaders.qwen_image.vae_file import load_qwenimage_vae_file

    vae = diffusers.AutoencoderKLQwenImage(base_dim=4, z_dim=4, dim_mult=[1, 2, 4, 4],
                                           num_res_blocks=2,
                                           temperal_downsample=[False, True, True],
                                           latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    original = wan_original(vae, 2)
    expected = {k: v.numpy() for k, v in vae.state_dict().items()}
    converted = convert_wan_vae_to_diffusers(dict(original))
    assert set(converted) == set(expected)
    for key, value in converted.items():
        np.testing.assert_array_equal(value.numpy(), expected[key], err_msg=key)
    save_file(original, str(tmp_path / "qwen_image_vae.safetensors"))
    weights = load_qwenimage_vae_file(tmp_path / "qwen_image_vae.safetensors",
                                      config=dict(vae.config))
    assert set(weights) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
