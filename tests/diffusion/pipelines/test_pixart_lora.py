"""LoRA for PixArt-Σ through the command line: a LoRA made with peft on diffusers' transformer
over the modules PixArt's LoRA training script targets (self- and cross-attention, the
feed-forward, the patch embedding's convolution, the caption projection, the timestep
embedding and its adaLN-single table, the output), saved in diffusers' layout as that script
saves it (`StableDiffusionPipeline.save_lora_weights(unet_lora_layers=)`: `unet.` names, and
the `transformer.` names of diffusers' newer LoRA savers), gives at the tag's weight the picture
of diffusers' PixArtSigmaPipeline whose transformer carries the adapter at that weight
(diffusers' PixArt pipelines load no LoRA themselves: peft's adapter is the reference)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="the reference LoRA is peft's")
import diffusers
import torch
from cli_support import cli_ok, png_levels
from pixart_tiny import tiny_pixart_transformer

import gpucore

HEIGHT, WIDTH = 24, 40
RED = "a red circle"
# PixArt's train_pixart_lora_hf.py target_modules
TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj",
           "ff.net.2", "proj", "linear", "linear_1", "linear_2"]


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(RED, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                           guidance_scale=4.5, use_resolution_binning=False,
                           generator=torch.Generator().manual_seed(7), output_type="np").images
    return np.round(np.asarray(images[0]) * 255)


def _lora(folder: Path) -> tuple[Any, Path]:
    """(the transformer carrying the adapter at weight 0.8, its files in `folder`: `unet.`
    names, pixart.safetensors; `transformer.` names, pixart_new.safetensors)."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer
    from safetensors.torch import save_file

    # the folder's weights (the same seed); diffusers' PixArt transformer has no
    # add_adapter: peft's adapter injected, the training script's way (alpha = rank: its
    # files carry no alpha)
    model = inject_adapter_in_model(LoraConfig(r=2, lora_alpha=2, target_modules=TARGETS),
                                    tiny_pixart_transformer())
    gen = torch.Generator().manual_seed(3)
    state = {}
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "lora_" in key:  # peft starts B at zero: redrawn so the LoRA shows
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
                state[key.replace(".default.", ".")] = p.detach().clone()
    for layer in model.modules():  # the tag's weight
        if isinstance(layer, LoraLayer):
            layer.set_scale("default", 0.8)
    assert any(".proj." in k and "pos_embed" in k for k in state)  # the 2x2 convolution too
    folder.mkdir()
    save_file({f"unet.{k}": v.contiguous() for k, v in state.items()},
              folder / "pixart.safetensors")
    save_file({f"transformer.{k}": v.contiguous() for k, v in state.items()},
              folder / "pixart_new.safetensors")
    return model, folder


def test_pixart_peft_lora_matches_peft(first_device: gpucore.Device,
                                       tiny_pixart: tuple[Path, Any], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_pixart
    plain = reference.transformer
    adapted, loras = _lora(tmp_path / "loras")
    try:
        pipe = diffusers.PixArtSigmaPipeline(**{**reference.components,
                                                "transformer": adapted})
        expected = _diffusers(pipe)
    finally:
        reference.transformer = plain
    common = ("txt2img", "--model", str(folder), "--width", str(WIDTH), "--height",
              str(HEIGHT), "--steps", "2", "--sampler", "diffusers", "--rng", "torch",
              "--seed", "7", "--dtype", "float32", "--cfg-scale", "4.5", "--lora-dir",
              str(loras))
    for name in ("pixart", "pixart_new"):
        out, _ = cli_ok(capsys, *common, "--prompt", f"<lora:{name}:0.8>{RED}",
                        "--out", str(tmp_path / f"{name}.png"))
        assert np.abs(png_levels(out) - expected).max() <= 1, name  # the PNG's rounding
    # the LoRA matters (diffusers' picture without it: cheaper than a run of ours)
    assert np.abs(_diffusers(reference) - expected).mean() > 5
