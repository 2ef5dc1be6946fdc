"""/sdapi/v1/png-info's `parameters`, read as the WebUI's parse_generation_parameters reads an
infotext (modules/infotext_utils.py): "WxH" values split into "-1" and "-2", and the values it
gives the fields an infotext leaves out, where they are ours. The last lines are the WebUI's
own (v1.8.0 inpaint, v1.6.0 hires fix); the values are typed, as our parser types them, and an
old "DPM++ 2M Karras" names its schedule type apart. Host logic, no device."""

from __future__ import annotations

import pytest

from diffusion.server.images import webui_parameters

pytestmark = pytest.mark.nodevice

# what the WebUI fills in for a field left out, in its order
DEFAULTS = {"Clip skip": "1", "Hires resize-1": 0, "Hires resize-2": 0,
            "Hires sampler": "Use same sampler", "Hires schedule type": "Use same scheduler",
            "Hires checkpoint": "Use same checkpoint", "Hires prompt": "",
            "Hires negative prompt": "", "Mask mode": "Inpaint masked",
            "Masked content": "original", "Inpaint area": "Whole picture",
            "Masked area padding": 32, "RNG": "GPU", "Schedule type": "Automatic"}

INPAINTED = (
    "masterpiece, 1girl, short hair\nNegative prompt: worst quality, low quality\nSteps: 20, "
    "Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1068468216, Size: 352x528, Model hash: "
    "cbfba64e66, Model: counterfeitV30_v30, VAE hash: df3c506e51, VAE: kl-f8-anime2.ckpt, "
    "Denoising strength: 0.45, Mask blur: 4, Inpaint area: Only masked, Masked area padding: "
    "32, Masked content: fill, Version: v1.8.0")

HIRES = (
    "a lighthouse at dusk\nSteps: 20, Sampler: Euler a, CFG scale: 10, Seed: 2892782840, "
    "Size: 896x512, Model hash: 879db523c3, Model: dreamshaper_8, VAE hash: 63aeecb90f, VAE: "
    "vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.6, Clip skip: 2, ENSD: "
    "31337, Hires upscale: 2, Hires upscaler: Latent, Version: v1.6.0")


def test_an_inpaint_infotext_gets_the_defaults_of_what_it_leaves_out() -> None:
    written = {
        "Prompt": "masterpiece, 1girl, short hair", "Negative prompt": "worst quality, low "
        "quality", "Steps": 20, "Sampler": "DPM++ 2M", "CFG scale": 7.0, "Seed": 1068468216,
        "Size-1": 352, "Size-2": 528, "Model hash": "cbfba64e66",
        "Model": "counterfeitV30_v30", "VAE hash": "df3c506e51", "VAE": "kl-f8-anime2.ckpt",
        "Denoising strength": 0.45, "Mask blur": 4, "Inpaint area": "Only masked",
        "Masked area padding": 32, "Masked content": "fill", "Version": "v1.8.0",
        "Schedule type": "Karras"}
    left_out = {k: v for k, v in DEFAULTS.items() if k not in written}
    assert webui_parameters(INPAINTED) == {**written, **left_out}
    assert list(webui_parameters(INPAINTED))[-len(left_out):] == list(left_out)


def test_a_hires_infotext_keeps_what_it_says() -> None:
    parameters = webui_parameters(HIRES)
    assert (parameters["Clip skip"], parameters["Hires upscale"], parameters["ENSD"],
            parameters["Denoising strength"]) == ("2", 2.0, 31337, 0.6)
    assert {k: parameters[k] for k in DEFAULTS if k != "Clip skip"} == {
        k: v for k, v in DEFAULTS.items() if k != "Clip skip"}


def test_sizes_are_split_as_the_webui_splits_them() -> None:
    """"Hires resize" (read by us) and "First pass size" (not) as "-1" and "-2"; a prompt that
    looks like a size stays whole; an empty text has no parameters."""
    parameters = webui_parameters(
        "512x512\nSteps: 12, Sampler: Euler, CFG scale: 5, Seed: 1, Size: 513x577, Hires resize: "
        "1025x1089, First pass size: 0x0, Denoising strength: 0.35, RNG: CPU, Mask mode: "
        "Inpaint not masked")
    assert (parameters["Hires resize-1"], parameters["Hires resize-2"]) == (1025, 1089)
    assert (parameters["First pass size-1"], parameters["First pass size-2"]) == ("0", "0")
    assert parameters["Prompt"] == "512x512" and "Hires resize" not in parameters
    assert (parameters["RNG"], parameters["Mask mode"]) == ("CPU", "Inpaint not masked")
    assert webui_parameters(" \n") == {}
