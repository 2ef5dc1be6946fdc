"""LoRA for NucleusMoE-Image through the command line: a LoRA made with peft on diffusers'
NucleusMoEImageTransformer2DModel and saved as FluxPipeline saves one (diffusers/PEFT's
`transformer.` names, its alpha in the file's metadata) gives, at the tag's weight, diffusers'
NucleusMoEImagePipeline picture with the LoRA merged into the weights by hand (the pipeline
has no load_lora_weights), on every linear layer (attention, the text's projections, the
dense and shared SwiGLUs, the routers, modulations, embedders, output; the experts' packed
weights are no linear layers)."""

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
from lora_tiny import peft_lora
from nucleus_tiny import tiny_nucleus_transformer
from safetensors.torch import load_file

import gpucore

HEIGHT, WIDTH = 24, 40
RED = "a red circle on a blue square"
TARGETS = (r".+\.(to_q|to_k|to_v|to_out\.0|add_[kv]_proj|net\.0\.proj|net\.2|img_mod\.1"
           r"|encoder_proj|gate|linear|linear_[12])|img_in|proj_out")
SCALE = 3 / 2  # lora_tiny's alpha 3 over its rank 2


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(RED, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                           guidance_scale=1.0,
                           generator=torch.Generator().manual_seed(7), output_type="np").images
    return np.round(np.asarray(images[0]) * 255)


def _merged(reference: Any, path: Path, weight: float) -> np.ndarray:
    """diffusers' picture with W + weight * SCALE * B @ A in every layer the LoRA names, the
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
        return _diffusers(reference)
    finally:
        with torch.no_grad():
            for name, weight_ in saved.items():
                modules[name].weight.copy_(weight_)


def test_nucleus_peft_lora_matches_merged_weights(first_device: gpucore.Device,
                                                  tiny_nucleus: tuple[Path, Any],
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_nucleus
    assert not hasattr(diffusers.NucleusMoEImagePipeline, "load_lora_weights")
    path = peft_lora(tiny_nucleus_transformer(), TARGETS, diffusers.FluxPipeline, tmp_path,
                     "nucleus")
    expected = _merged(reference, path, 0.8)
    got, _ = cli_ok(capsys, "txt2img", "--model", str(folder), "--width", str(WIDTH),
                    "--height", str(HEIGHT), "--steps", "2", "--sampler", "diffusers", "--rng",
                    "torch", "--seed", "7", "--dtype", "float32", "--cfg-scale", "1",
                    "--lora-dir", str(tmp_path), "--prompt", f"<lora:nucleus:0.8>{RED}",
                    "--out", str(tmp_path / "a.png"))
    assert np.abs(png_levels(got) - expected).max() <= 1  # the PNG's rounding
    # the LoRA matters (and the reference's weights were put back: its plain picture)
    assert np.abs(expected - _diffusers(reference)).mean() > 5
