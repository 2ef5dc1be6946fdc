"""SDXL GGUF UNets in the key layouts ComfyUI-GGUF (SGM names, `model.diffusion_model.`
stripped) and stable-diffusion.cpp (prefix kept) write, built here with the `gguf` package from
a tiny SDXL UNet: they load with their weights kept quantized and compute what diffusers' UNet
holding the file's values computes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gguf", reason="GGUF needs the gguf package (diffusion extra)")
torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
from ldm_files import ldm_unet  # noqa: E402
from sd_tiny import randomized, state_dict  # noqa: E402
from sdxl_tiny import UNET_SDXL_TINY  # noqa: E402

import gpucore  # noqa: E402
import gpustd  # noqa: E402
from diffusion.loaders import WeightsError  # noqa: E402
from diffusion.loaders.formats.gguf_file import GGUFFile  # noqa: E402
from diffusion.loaders.formats.gguf_write import write_gguf  # noqa: E402
from diffusion.loaders.sd.gguf_unet import load_unet_gguf  # noqa: E402
from gpustd.nn.quantized import quantized_weights  # noqa: E402

PREFIX = "model.diffusion_model."


def _sgm_names(weights: dict[str, np.ndarray]) -> dict[str, str]:
    """diffusers key -> SGM key (with PREFIX), as an SDXL checkpoint names the UNet."""
    label = {f"add_embedding.linear_{i + 1}.{p}": f"{PREFIX}label_emb.0.{2 * i}.{p}"
             for i in (0, 1) for p in ("weight", "bias")}
    rest = [k for k in weights if k not in label]
    ldm = ldm_unet({k: weights[k] for k in rest})  # insertion order follows rest's
    return {**dict(zip(rest, ldm)), **label}


def _inputs(device: gpucore.Device) -> tuple:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    context = rng.standard_normal((1, 7, 64)).astype(np.float32)
    pooled = rng.standard_normal((1, 32)).astype(np.float32)
    ids = np.array([[16, 16, 0, 0, 16, 16]], np.float32)
    return x, context, pooled, ids


@pytest.mark.parametrize("layout", ["comfyui-gguf", "stable-diffusion.cpp"])
def test_sdxl_unet_gguf(first_device: gpucore.Device, tmp_path, layout: str) -> None:
    original = randomized(diffusers.UNet2DConditionModel(**UNET_SDXL_TINY), 5)
    weights = state_dict(original)
    names = _sgm_names(weights)
    strip = len(PREFIX) if layout == "comfyui-gguf" else 0
    path = tmp_path / "sdxl-unet-Q8_0.gguf"
    counts = write_gguf(path, ((names[k][strip:], v) for k, v in weights.items()), "q8_0",
                        architecture="sdxl")
    assert counts["q8_0"] > 20
    config = dict(original.config)  # the tiny model's heads and 8-wide time ids
    unet = load_unet_gguf(path, device=first_device, config=config)
    held = quantized_weights(unet)
    assert "add_embedding.linear_2.weight" in held and held[
        "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight"].format == "q8_0"

    file = GGUFFile(path)
    back = {v[strip:]: k for k, v in names.items()}
    reference = diffusers.UNet2DConditionModel(**UNET_SDXL_TINY)
    reference.load_state_dict({back[k]: torch.from_numpy(file.read(k).copy())
                               for k in file.keys()})
    x, context, pooled, ids = _inputs(first_device)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x), 500.0, torch.from_numpy(context),
                             added_cond_kwargs={"text_embeds": torch.from_numpy(pooled),
                                                "time_ids": torch.from_numpy(ids)}).sample.numpy()
    got = unet(gpustd.asarray(x, device=first_device), [500.0],
               gpustd.asarray(context, device=first_device),
               added_cond={"text_embeds": pooled, "time_ids": ids}).numpy()
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4 * np.abs(expected).max())


def test_sdxl_gguf_without_config_names_what_to_pass(tmp_path) -> None:
    """The tiny model's time ids are not SDXL's: its shapes cannot give a config."""
    original = randomized(diffusers.UNet2DConditionModel(**UNET_SDXL_TINY), 5)
    weights = state_dict(original)
    names = _sgm_names(weights)
    path = tmp_path / "odd.gguf"
    write_gguf(path, ((names[k], v) for k, v in weights.items()), "q8_0", architecture="sdxl")
    with pytest.raises(WeightsError, match=r"label_emb takes 80 inputs.*config"):
        load_unet_gguf(path)
