"""Kolors end to end against diffusers' KolorsPipeline and KolorsImg2ImgPipeline (a tiny
folder, kolors_tiny): txt2img and img2img with the folder's scheduler (`sampler="diffusers"`,
`rng="torch"`: the same noise), and the WebUI's Euler on Karras sigmas against diffusers'
Euler given those sigmas (kolors_tiny.karras_euler: from the 1100-step schedule's betas).
Pictures are compared as uint8 as test_sd_pipeline's are."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
import torch  # noqa: E402
from diffusers.pipelines.kolors.pipeline_kolors import KolorsPipeline  # noqa: E402
from diffusers.pipelines.kolors.pipeline_kolors_img2img import KolorsImg2ImgPipeline  # noqa: E402
from kolors_tiny import karras_euler, kolors_folder  # noqa: E402
from PIL import Image  # noqa: E402
from test_sd_pipeline import _assert_images_match  # noqa: E402

import gpucore  # noqa: E402
from diffusion import load_pipeline  # noqa: E402
from diffusion.pipelines.families import capabilities_of  # noqa: E402

SIZE = 32
PROMPT, NEGATIVE = "a lighthouse at dusk, oil painting", "一只猫"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return kolors_folder(tmp_path_factory)


_LOADED: dict[int, Any] = {}


def _ours(tiny: Any, device: gpucore.Device) -> Any:
    if id(device) not in _LOADED:
        _LOADED[id(device)] = load_pipeline(tiny.path, device=device)
    return _LOADED[id(device)]


def test_txt2img_matches_diffusers(device: gpucore.Device, tiny: Any) -> None:
    """A Chinese negative prompt, a non-square picture; then the empty negative prompt
    (diffusers' negative_prompt=None: "" encoded), and the prompt visibly matters."""
    ours = _ours(tiny, device)
    assert type(ours).__name__ == "Kolors" and ours.family == "kolors"
    assert capabilities_of(tiny.path) == ours.capabilities  # told before the load, the same
    common = dict(steps=2, cfg_scale=5.0, seed=5, sampler="diffusers", rng="torch")
    result = ours.txt2img(PROMPT, negative_prompt=NEGATIVE, width=SIZE + 8, height=SIZE,
                          **common)
    expected = tiny.pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=2,
                         guidance_scale=5.0, width=SIZE + 8, height=SIZE,
                         generator=torch.Generator().manual_seed(5), output_type="np").images
    _assert_images_match(result.images, expected)
    plain = ours.txt2img(PROMPT, width=SIZE, height=SIZE, **common)
    expected = tiny.pipe(PROMPT, num_inference_steps=2, guidance_scale=5.0, width=SIZE,
                         height=SIZE, generator=torch.Generator().manual_seed(5),
                         output_type="np").images
    _assert_images_match(plain.images, expected)
    other = ours.txt2img("一只猫坐在桌子上", width=SIZE, height=SIZE, **common)
    change = np.abs(plain.images[0].astype(float) - other.images[0].astype(float)).mean()
    assert change > 8, change  # the prompt moves the picture far past the tolerance


def test_img2img_matches_diffusers(first_device: gpucore.Device, tiny: Any) -> None:
    """The picture's size given to diffusers too: without it KolorsImg2ImgPipeline's
    micro-conditioning is the UNet's default size whatever the picture's."""
    ours = _ours(tiny, first_device)
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8))
    result = ours.img2img(image, PROMPT, negative_prompt=NEGATIVE, steps=3, strength=0.7,
                          cfg_scale=4.0, seed=4, width=SIZE, height=SIZE, sampler="diffusers",
                          rng="torch")
    reference = KolorsImg2ImgPipeline(**tiny.pipe.components)
    reference.set_progress_bar_config(disable=True)
    expected = reference(PROMPT, negative_prompt=NEGATIVE, image=image, strength=0.7,
                         num_inference_steps=3, guidance_scale=4.0, width=SIZE, height=SIZE,
                         generator=torch.Generator().manual_seed(4), output_type="np").images
    _assert_images_match(result.images, expected)


def test_webui_euler_matches_diffusers_euler(first_device: gpucore.Device, tiny: Any) -> None:
    """Euler on Karras sigmas of the model's own 1100 training steps (beta_end 0.014): the
    sigmas from the betas (float64), diffusers' Euler run on them from sigma_max. Two steps:
    the tiny model amplifies rounding with every step (diffusers' own float32 and float64
    pictures differ by 1.2 levels on average after four)."""
    ours = _ours(tiny, first_device)
    result = ours.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=2, cfg_scale=5.0, seed=6,
                          width=SIZE, height=SIZE, sampler="Euler", scheduler="Karras",
                          rng="torch")
    expected = karras_euler(tiny.pipe, PROMPT, negative_prompt=NEGATIVE, steps=2, seed=6,
                            size=SIZE, guidance_scale=5.0)
    _assert_images_match(result.images, expected)


def test_unet_lora_matches_diffusers(first_device: gpucore.Device, tiny: Any,
                                     tmp_path: Path) -> None:
    """A peft LoRA of the UNet's attention saved by KolorsPipeline.save_lora_weights, as a
    <lora:...> tag (SDXL's path; the WebUI's samplers: "diffusers" runs the model as loaded),
    against diffusers running the UNet with the adapter; the LoRA visibly changes the
    picture."""
    pytest.importorskip("peft", reason="peft makes the reference LoRA")
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = copy.deepcopy(tiny.pipe.unet)
    unet.add_adapter(LoraConfig(r=2, lora_alpha=3,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    KolorsPipeline.save_lora_weights(
        tmp_path, unet_lora_layers=get_peft_model_state_dict(unet),
        weight_name="kolors_lora.safetensors",
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict())
    ours = _ours(tiny, first_device)
    ours.lora_dir = tmp_path
    settings = dict(steps=2, cfg_scale=5.0, seed=8, width=SIZE, height=SIZE, sampler="Euler",
                    scheduler="Karras", rng="torch")
    result = ours.txt2img(f"<lora:kolors_lora:1> {PROMPT}", **settings)
    reference = KolorsPipeline(**{**tiny.pipe.components, "unet": unet})
    expected = karras_euler(reference, PROMPT, steps=2, seed=8, size=SIZE, guidance_scale=5.0)
    _assert_images_match(result.images, expected)
    plain = ours.txt2img(PROMPT, **settings)  # the tag gone: the LoRA is taken off
    change = np.abs(plain.images[0].astype(float) - result.images[0].astype(float)).mean()
    assert change > 4, change


def test_lowvram_and_hires_fix(first_device: gpucore.Device, tiny: Any) -> None:
    """Loaded for --lowvram and run under it (ChatGLM the text encoders' unit, brought in
    for its encode), the plain mode's picture bit for bit, with a latent hires pass."""
    from diffusion.pipelines.sd.memory import MemoryMode
    from diffusion.upscalers.interpolation import HiresFix

    settings = dict(steps=2, cfg_scale=5.0, seed=9, width=SIZE, height=SIZE, sampler="Euler",
                    rng="torch", negative_prompt=NEGATIVE,
                    hires=HiresFix(scale=1.5, upscaler="Latent (nearest)", steps=2,
                                   denoise=0.6))
    plain = _ours(tiny, first_device).txt2img(PROMPT, **settings)
    assert plain.images[0].shape == (48, 48, 3)
    low = load_pipeline(tiny.path, device=first_device, offload=True)
    low.set_memory_mode(MemoryMode(lowvram=True))
    try:
        np.testing.assert_array_equal(low.txt2img(PROMPT, **settings).images[0],
                                      plain.images[0])
    finally:
        low.set_memory_mode(MemoryMode())


@pytest.mark.nodevice
def test_unet_config_refusals() -> None:
    """encoder_hid_dim_type other than Kolors' text_proj, or one without its width, is named
    in one line; a ControlNet of Kolors' is refused likewise."""
    from kolors_tiny import UNET_KOLORS_TINY

    from diffusion.models.controlnet import ControlNetModel
    from diffusion.models.unet import check_config

    assert check_config(UNET_KOLORS_TINY)["encoder_hid_dim"] == 32
    for bad in ({"encoder_hid_dim_type": "image_proj"}, {"encoder_hid_dim": None}):
        with pytest.raises(ValueError, match="encoder_hid_dim_type") as error:
            check_config({**UNET_KOLORS_TINY, **bad})
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="Kolors ControlNets are not supported"):
        ControlNetModel(dict(UNET_KOLORS_TINY))


def test_original_repository_layout(first_device: gpucore.Device, tiny: Any,
                                    tmp_path: Path) -> None:
    """Kwai-Kolors/Kolors' own layout: model_index.json naming StableDiffusionXLPipeline with
    a ChatGLMModel text encoder, the encoder as THUDM's `transformer.`-prefixed
    pytorch_model-*.bin shards with their index: the diffusers folder's picture bit for bit."""
    import json
    import shutil

    from safetensors.torch import load_file

    root = shutil.copytree(tiny.path, tmp_path / "Kolors")
    index = json.loads((root / "model_index.json").read_text(encoding="utf-8"))
    index["_class_name"] = "StableDiffusionXLPipeline"
    (root / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    encoder = root / "text_encoder"
    tensors = {f"transformer.{k}": v for k, v in
               load_file(str(encoder / "model.safetensors")).items()}
    (encoder / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"pytorch_model-00001-of-00002.bin": names[::2],
              "pytorch_model-00002-of-00002.bin": names[1::2]}
    for shard, keys in shards.items():
        torch.save({k: tensors[k] for k in keys}, encoder / shard)
    (encoder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {
        k: shard for shard, keys in shards.items() for k in keys}}), encoding="utf-8")
    settings = dict(steps=2, cfg_scale=5.0, seed=3, width=SIZE, height=SIZE,
                    sampler="diffusers", rng="torch")
    original = load_pipeline(root, device=first_device)
    assert original.family == "kolors"
    np.testing.assert_array_equal(original.txt2img(PROMPT, **settings).images[0],
                                  _ours(tiny, first_device).txt2img(PROMPT, **settings).images[0])


def test_unet_file_with_its_base_folder(first_device: gpucore.Device, tiny: Any,
                                        tmp_path: Path) -> None:
    """The UNet as one .safetensors (diffusers' names as Kwai ships unet/, and the LDM
    names as ComfyUI saves a fine-tune) with --base the folder: the folder's picture bit for
    bit; without a base, refused in one line."""
    import ldm_files
    from safetensors.torch import save_file

    from diffusion.pipelines.bases import base_family

    unet = {k: v.contiguous() for k, v in tiny.pipe.unet.state_dict().items()}
    ldm = dict(unet)
    label = {f"model.diffusion_model.label_emb.0.{2 * i}.{p}": ldm.pop(
        f"add_embedding.linear_{i + 1}.{p}") for i in (0, 1) for p in ("weight", "bias")}
    hid = {f"model.diffusion_model.encoder_hid_proj.{p}": ldm.pop(f"encoder_hid_proj.{p}")
           for p in ("weight", "bias")}
    files = {"kolors_unet.safetensors": unet,
             "kolors_ldm.safetensors": {**ldm_files.ldm_unet(ldm), **label, **hid}}
    settings = dict(steps=2, cfg_scale=5.0, seed=4, width=SIZE, height=SIZE,
                    sampler="diffusers", rng="torch")
    expected = _ours(tiny, first_device).txt2img(PROMPT, **settings).images[0]
    for name, tensors in files.items():
        save_file(tensors, str(tmp_path / name))
        assert base_family(tmp_path / name) == ("Kolors", "kolors")
        single = load_pipeline(tmp_path / name, device=first_device, base=tiny.path)
        np.testing.assert_array_equal(single.txt2img(PROMPT, **settings).images[0], expected)
    with pytest.raises(ValueError, match="Kolors UNet file: give a Kolors diffusers folder"):
        load_pipeline(tmp_path / name, device=first_device)
