"""LoRA for PRX through the command line: its transformer keeps diffusers' parameter names, so
a LoRA made with peft on diffusers' PRXTransformer2DModel and saved as FluxPipeline saves one
(diffusers/PEFT's `transformer.` names, its alpha in the file's metadata) gives, at the tag's
weight, diffusers' PRXPipeline picture with the LoRA merged into the weights by hand, on every
linear layer (the fused projections, the MLPs, the modulations, the embedders, the output)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="the LoRA is made with peft")
import diffusers
import torch
from cli_support import cli_ok, png_levels
from prx_tiny import tiny_prx_transformer
from safetensors.torch import load_file

import gpucore

HEIGHT, WIDTH = 24, 40
RED = "a red circle on a blue square"
TARGETS = (r".+\.(img_qkv_proj|txt_kv_proj|to_out\.0|gate_proj|up_proj|down_proj|lin)"
           r"|img_in|txt_in|time_in\.(in_layer|out_layer)|final_layer\.linear"
           r"|final_layer\.adaLN_modulation\.1")
SCALE = 3 / 2  # lora_tiny's alpha 3 over its rank 2


def _peft_lora(folder: Path) -> Path:
    """lora_tiny.peft_lora's LoRA (rank 2, alpha 3, A and B ~ N(0, 0.4^2)) of the tiny
    transformer, injected with peft itself: diffusers' PRXTransformer2DModel has no
    add_adapter."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    config = LoraConfig(r=2, lora_alpha=3, target_modules=TARGETS)
    model = inject_adapter_in_model(config, tiny_prx_transformer())
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "lora_" in key:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.4)
    diffusers.FluxPipeline.save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(model),
        weight_name="prx.safetensors", transformer_lora_adapter_metadata=config.to_dict())
    return folder / "prx.safetensors"


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(RED, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                           guidance_scale=1.0, use_resolution_binning=False,
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


def test_prx_peft_lora_matches_merged_weights(first_device: gpucore.Device,
                                              tiny_prx: tuple[Path, Any], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import diffusers.pipelines.prx.pipeline_prx as module

    # diffusers' cleaning calls ftfy, not installed here (the identity on this prompt)
    monkeypatch.setattr(module, "ftfy", types.SimpleNamespace(fix_text=lambda t: t),
                        raising=False)
    folder, reference = tiny_prx
    path = _peft_lora(tmp_path)
    expected = _merged(reference, path, 0.8)
    got, _ = cli_ok(capsys, "txt2img", "--model", str(folder), "--width", str(WIDTH),
                    "--height", str(HEIGHT), "--steps", "2", "--sampler", "diffusers", "--rng",
                    "torch", "--seed", "7", "--dtype", "float32", "--cfg-scale", "1",
                    "--lora-dir", str(tmp_path), "--prompt", f"<lora:prx:0.8>{RED}",
                    "--out", str(tmp_path / "a.png"))
    assert np.abs(png_levels(got) - expected).max() <= 1  # the PNG's rounding
    # the LoRA matters (and the reference's weights were put back: its plain picture)
    assert np.abs(expected - _diffusers(reference)).mean() > 5
