"""Wan LoRAs through `python -m diffusion txt2vid --lora FILE[:WEIGHT]`: a ComfyUI-keyed file
(`diffusion_model.blocks.N.self_attn.q.lora_down.weight`, alphas, bias updates `diff_b`, norm
diffs, the embedders and head, as lightx2v's step-distillation LoRAs are written) and a
diffusers/PEFT one (`transformer.blocks.N.attn1.to_q.lora_A.weight`), each giving diffusers'
video after `load_lora_weights` (+ `set_adapters` for a weight) on a tiny Wan folder; the LoRA
visibly changes the video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="diffusers loads LoRAs through PEFT")
import torch
from cli_support import png_frames
from safetensors.numpy import save_file
from wan_tiny import WAN_TINY, tiny_wan_pipeline

import diffusion.cli.main as cli
import gpucore

PROMPT = "a red cube on a wooden table"
RANK = 4


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-wan-lora")
    return root / "wan", tiny_wan_pipeline(root)


def _pair(rng: np.random.Generator, out_dim: int, in_dim: int) -> tuple[np.ndarray, np.ndarray]:
    # large enough that the update visibly moves the video
    return (rng.normal(0, 1.0, (RANK, in_dim)).astype(np.float32),
            rng.normal(0, 0.5, (out_dim, RANK)).astype(np.float32))


def _comfy_lora(path: Path) -> Path:
    """ComfyUI's keys with kohya's part names and the blocks' alphas (alpha != rank, so the
    scale counts)."""
    rng = np.random.default_rng(11)
    dim = WAN_TINY["num_attention_heads"] * WAN_TINY["attention_head_dim"]
    layers = {f"blocks.{i}.{name}": shape for i in range(WAN_TINY["num_layers"])
              for name, shape in (("self_attn.q", (dim, dim)), ("self_attn.o", (dim, dim)),
                                  ("cross_attn.k", (dim, dim)), ("cross_attn.v", (dim, dim)),
                                  ("ffn.0", (WAN_TINY["ffn_dim"], dim)),
                                  ("ffn.2", (dim, WAN_TINY["ffn_dim"])))}
    layers["text_embedding.0"] = (dim, WAN_TINY["text_dim"])
    layers["head.head"] = (WAN_TINY["out_channels"] * 4, dim)
    tensors = {}
    for name, (out_dim, in_dim) in layers.items():
        down, up = _pair(rng, out_dim, in_dim)
        tensors[f"diffusion_model.{name}.lora_down.weight"] = down
        tensors[f"diffusion_model.{name}.lora_up.weight"] = up
        if name.startswith("blocks."):  # (diffusers reads the blocks' alphas only)
            tensors[f"diffusion_model.{name}.alpha"] = np.array(2.0, np.float32)
        # bias updates, as lightx2v's carry (on every layer: PEFT leaves a bias it was not
        # given on the meta device)
        tensors[f"diffusion_model.{name}.diff_b"] = rng.normal(0, 0.3, out_dim).astype(
            np.float32)
    for i in range(WAN_TINY["num_layers"]):  # norm diffs: zeros, skipped by both
        tensors[f"diffusion_model.blocks.{i}.self_attn.norm_q.diff"] = np.zeros(dim, np.float32)
        tensors[f"diffusion_model.blocks.{i}.norm3.diff_b"] = np.zeros(dim, np.float32)
    save_file(tensors, str(path))
    return path


def _peft_lora(path: Path) -> Path:
    rng = np.random.default_rng(12)
    dim = WAN_TINY["num_attention_heads"] * WAN_TINY["attention_head_dim"]
    tensors = {}
    for i in range(WAN_TINY["num_layers"]):
        for name in ("attn1.to_k", "attn1.to_v", "attn2.to_q", "attn2.to_out.0"):
            down, up = _pair(rng, dim, dim)
            tensors[f"transformer.blocks.{i}.{name}.lora_A.weight"] = down
            tensors[f"transformer.blocks.{i}.{name}.lora_B.weight"] = up
    save_file(tensors, str(path))
    return path


def _ours(capsys: pytest.CaptureFixture[str], folder: Path, out: Path, *lora: str) -> np.ndarray:
    code = cli.main(["txt2vid", "--model", str(folder), "--width", "48", "--height", "32",
                     "--frames", "5", "--steps", "2", "--cfg-scale", "1", "--seed", "3",
                     "--dtype", "float32", "--prompt", PROMPT, "-o", str(out), *lora])
    _, err = capsys.readouterr()
    assert code == 0, err
    return png_frames(out)


def _theirs(pipe: Any) -> np.ndarray:
    return pipe(PROMPT, height=32, width=48, num_frames=5, num_inference_steps=2,
                guidance_scale=1.0, output_type="np",
                generator=torch.Generator().manual_seed(3)).frames[0]


@pytest.mark.parametrize("kind", ["comfyui", "peft"])
def test_wan_lora_equals_diffusers(first_device: gpucore.Device, tiny_wan: tuple[Path, Any],
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   kind: str) -> None:
    folder, pipe = tiny_wan
    lora, weight = ((_comfy_lora(tmp_path / "distill.safetensors"), 1.0) if kind == "comfyui"
                    else (_peft_lora(tmp_path / "style.safetensors"), 0.7))
    plain = _theirs(pipe)
    pipe.load_lora_weights(str(lora), adapter_name=kind)
    try:
        pipe.set_adapters([kind], [weight])
        expected = _theirs(pipe)
    finally:
        pipe.unload_lora_weights()
    assert np.abs(expected - plain).mean() > 0.03  # the LoRA visibly matters
    ours = _ours(capsys, folder, tmp_path / "out", "--lora", f"{lora}:{weight}")
    assert np.abs(ours - expected).mean() < 0.01


def test_bad_lora_gets_one_line(tiny_wan: tuple[Path, Any], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = tiny_wan
    base = ["txt2vid", "--model", str(folder), "--width", "48", "--height", "32", "--frames",
            "5", "--prompt", "x", "-o", str(tmp_path / "out")]
    assert cli.main([*base, "--lora", str(tmp_path / "missing.safetensors")]) != 0
    assert "no such file" in capsys.readouterr().err
    flux = tmp_path / "flux.safetensors"  # a layer the Wan transformer lacks
    save_file({"transformer.single_transformer_blocks.0.proj_mlp.lora_A.weight":
               np.ones((RANK, 8), np.float32),
               "transformer.single_transformer_blocks.0.proj_mlp.lora_B.weight":
               np.ones((8, RANK), np.float32)}, str(flux))
    assert cli.main([*base, "--dtype", "float32", "--lora", str(flux)]) != 0
    err = capsys.readouterr().err
    assert "not in this model" in err and "Traceback" not in err
