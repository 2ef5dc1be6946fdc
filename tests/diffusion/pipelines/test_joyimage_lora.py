"""LoRA for JoyImage Edit through the command line: a LoRA made with peft on diffusers'
JoyImageEditTransformer3DModel and saved as QwenImagePipeline saves one (diffusers/PEFT's
`transformer.` names, its alpha in the file's metadata) gives, at the tag's weight, diffusers'
JoyImageEditPipeline edit with the LoRA merged into the weights by hand (the pipeline has no
load_lora_weights), on every linear layer (attention, feed-forwards, the time and text
embedders, output). diffusers is held to the output size asked for and the VAE posterior's
mean, as in test_joyimage_pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="the LoRA is made with peft")
import diffusers
import torch
from cli_support import cli_ok, png_levels
from joyimage_tiny import tiny_joyimage, tiny_joyimage_transformer  # noqa: F401 (a fixture)
from PIL import Image
from safetensors.torch import load_file

import gpucore

HEIGHT, WIDTH = 32, 48
PROMPT = "put the red circle on the blue square"
TARGETS = (r".+\.(linear_[12]|time_proj|net\.0\.proj|net\.2|(img|txt)_attn_(qkv|proj))"
           r"|proj_out")
SCALE = 3 / 2  # alpha 3 over rank 2


@pytest.fixture(autouse=True)
def posterior_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    monkeypatch.setattr(DiagonalGaussianDistribution, "sample",
                        lambda self, generator=None: self.mode())


def _peft_lora(folder: Path) -> Path:
    """lora_tiny.peft_lora's LoRA (rank 2, alpha 3, A and B ~ N(0, 0.4^2)) of the tiny
    transformer, injected with peft itself: diffusers' JoyImageEditTransformer3DModel has no
    add_adapter."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    config = LoraConfig(r=2, lora_alpha=3, target_modules=TARGETS)
    model = inject_adapter_in_model(config, tiny_joyimage_transformer())
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "lora_" in key:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.4)
    diffusers.QwenImagePipeline.save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(model),
        weight_name="joy.safetensors", transformer_lora_adapter_metadata=config.to_dict())
    return folder / "joy.safetensors"


def _diffusers(reference: Any, picture: Any) -> np.ndarray:
    processor = reference.vae_image_processor
    processor.get_default_height_width = lambda image, height, width: (height, width)
    with torch.no_grad():
        images = reference(image=picture, prompt=PROMPT, height=HEIGHT, width=WIDTH,
                           num_inference_steps=2, guidance_scale=4.0,
                           generator=torch.Generator().manual_seed(7), output_type="np").images
    return np.round(np.asarray(images[0]) * 255)


def _merged(reference: Any, picture: Any, path: Path, weight: float) -> np.ndarray:
    """diffusers' edit with W + weight * SCALE * B @ A in every layer the LoRA names, the
    transformer's weights put back after."""
    lora = load_file(str(path))
    modules = dict(reference.transformer.named_modules())
    saved = {}
    with torch.no_grad():
        for key in [k for k in lora if k.endswith(".lora_A.weight")]:
            name = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
            layer = modules[name]
            saved[name] = layer.weight.clone()
            up = lora[key.replace("lora_A", "lora_B")].double()
            layer.weight += (weight * SCALE * up @ lora[key].double()).float()
    linear = {n for n, m in modules.items() if isinstance(m, torch.nn.Linear)}
    assert set(saved) == linear, sorted(linear - set(saved))  # every linear layer
    try:
        return _diffusers(reference, picture)
    finally:
        with torch.no_grad():
            for name, weight_ in saved.items():
                modules[name].weight.copy_(weight_)


def test_joyimage_peft_lora_matches_merged_weights(
        first_device: gpucore.Device, tiny_joyimage: tuple[Path, Any],  # noqa: F811
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_joyimage
    assert not hasattr(diffusers.JoyImageEditPipeline, "load_lora_weights")
    rng = np.random.default_rng(0)
    picture = Image.fromarray((rng.random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8))
    picture.save(tmp_path / "in.png")
    path = _peft_lora(tmp_path)
    expected = _merged(reference, picture, path, 0.8)
    got, _ = cli_ok(capsys, "img2img", "--model", str(folder), "--width", str(WIDTH),
                    "--height", str(HEIGHT), "--steps", "2", "--cfg-scale", "4", "--rng",
                    "torch", "--seed", "7", "--dtype", "float32", "--init-image",
                    str(tmp_path / "in.png"), "--lora-dir", str(tmp_path), "--prompt",
                    f"<lora:joy:0.8>{PROMPT}", "--out", str(tmp_path / "a.png"))
    assert np.abs(png_levels(got) - expected).max() <= 1  # the PNG's rounding
    # the LoRA matters (and the reference's weights were put back: its plain picture)
    assert np.abs(expected - _diffusers(reference, picture)).mean() > 5
