"""LoRA for Krea 2 through the command line: a LoRA made with peft on diffusers' transformer
and saved by `Krea2Pipeline.save_lora_weights` (diffusers/PEFT's `transformer.` names, its
alpha in the file's metadata) gives, at the tag's weight, diffusers' picture after its
`load_lora_weights` + `set_adapters`: on every linear layer, the projections our attention
runs in one GEMM (q with the gate, k with v), the SwiGLU's (gate with up) and the text
fusion's, which run once a prompt, among them. The same LoRA under Krea 2's original names
(ComfyUI's `diffusion_model.blocks.0.attn.wq`, ai-toolkit's `base_model.model.`) gives the
picture diffusers gives after converting it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="diffusers' LoRA loading needs peft")
import diffusers
import torch
from cli_support import cli_ok, png_levels
from krea2_tiny import tiny_krea2_transformer
from lora_tiny import peft_lora
from safetensors.torch import load_file, save_file

import gpucore

HEIGHT, WIDTH = 24, 40
RED = "a red circle on a blue square"
# every linear layer: the joint blocks' and the text fusion's attention and SwiGLU, the
# embeddings, the text fusion's projector, the final layer
TARGETS = (r".+\.(to_q|to_k|to_v|to_gate|to_out\.0|ff\.gate|ff\.up|ff\.down|linear_1|linear_2"
           r"|projector)|img_in|time_mod_proj|final_layer\.linear")
# diffusers' names -> Krea 2's original ones (krea-ai/krea-2's modules)
ORIGINAL = [(r"transformer_blocks\.", "blocks."), (r"^text_fusion\.", "txtfusion."),
            (r"\.attn\.to_q\.", ".attn.wq."), (r"\.attn\.to_k\.", ".attn.wk."),
            (r"\.attn\.to_v\.", ".attn.wv."), (r"\.attn\.to_out\.0\.", ".attn.wo."),
            (r"\.attn\.to_gate\.", ".attn.gate."), (r"\.ff\.", ".mlp."), (r"^img_in\.", "first."),
            (r"^final_layer\.", "last."), (r"^time_embed\.linear_1\.", "tmlp.0."),
            (r"^time_embed\.linear_2\.", "tmlp.2."), (r"^time_mod_proj\.", "tproj.1."),
            (r"^txt_in\.linear_1\.", "txtmlp.1."), (r"^txt_in\.linear_2\.", "txtmlp.3.")]


def _diffusers(reference: Any, prompt: str) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                           guidance_scale=0.0, generator=torch.Generator().manual_seed(7),
                           output_type="np").images
    return np.round(np.asarray(images[0]) * 255)


def _with_lora(reference: Any, path: Path, weight: float) -> np.ndarray:
    """diffusers' picture of RED with the LoRA at `path` at `weight`."""
    reference.load_lora_weights(str(path), adapter_name="lora")
    try:
        reference.set_adapters(["lora"], adapter_weights=[weight])
        return _diffusers(reference, RED)
    finally:
        reference.unload_lora_weights()


def _ours(capsys: pytest.CaptureFixture[str], folder: Path, loras: Path, prompt: str,
          out: Path) -> np.ndarray:
    got, _ = cli_ok(capsys, "txt2img", "--model", str(folder), "--width", str(WIDTH),
                    "--height", str(HEIGHT), "--steps", "2", "--sampler", "diffusers", "--rng",
                    "torch", "--seed", "7", "--dtype", "float32", "--cfg-scale", "1",
                    "--lora-dir", str(loras), "--prompt", prompt, "--out", str(out))
    return png_levels(got)


def test_krea2_peft_lora_matches_diffusers(first_device: gpucore.Device,
                                           tiny_krea2: tuple[Path, Any], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_krea2
    path = peft_lora(tiny_krea2_transformer(), TARGETS, diffusers.Krea2Pipeline, tmp_path,
                     "krea")
    expected = _with_lora(reference, path, 0.8)
    got = _ours(capsys, folder, tmp_path, f"<lora:krea:0.8>{RED}", tmp_path / "a.png")
    # within a level of diffusers' picture, the PNG's rounding (measured: the same levels)
    assert np.abs(got - expected).max() <= 1
    plain = _ours(capsys, folder, tmp_path, RED, tmp_path / "b.png")
    assert np.abs(got - plain).mean() > 5  # the LoRA matters (measured 35 levels mean)


def test_krea2_original_names(first_device: gpucore.Device, tiny_krea2: tuple[Path, Any],
                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_krea2
    state = load_file(peft_lora(tiny_krea2_transformer(), TARGETS, diffusers.Krea2Pipeline,
                                tmp_path, "peft", seed=4))
    original = {}
    for key, tensor in state.items():
        for pattern, name in ORIGINAL:
            key = re.sub(pattern, name, key.removeprefix("transformer."))
        original[key] = tensor
    for prefix in ("diffusion_model.", "base_model.model."):
        save_file({prefix + key: t for key, t in original.items()},
                  str(tmp_path / f"{prefix.split('.')[0]}.safetensors"))
    # the alpha was in the metadata, dropped with it: diffusers' scale is then 1
    expected = _with_lora(reference, tmp_path / "diffusion_model.safetensors", 0.8)
    assert np.abs(expected - _diffusers(reference, RED)).mean() > 5  # the LoRA matters
    for name in ("diffusion_model", "base_model"):
        got = _ours(capsys, folder, tmp_path, f"<lora:{name}:0.8>{RED}", tmp_path / "a.png")
        assert np.abs(got - expected).max() <= 1
