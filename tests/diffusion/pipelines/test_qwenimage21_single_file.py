"""A Qwen-Image 2.1 transformer as one file, as ComfyUI loads it (each block's SwiGLU gate and
up projections fused into `img_mlp.gate_up`, gate rows first, under `model.diffusion_model.`):
the layout checked against diffusers' own converter, every tensor read as diffusers' and the
config from the shapes; through the command line with a Qwen-Image 2.1 folder as `--base`
(one without transformer/) the bf16 file's picture is diffusers' of its values, and a Q8_0
GGUF's (the fused matrices' halves cut from their blocks) diffusers' of the values it holds,
near the float model's; a file without a base is refused in one line."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from diffusers.loaders.single_file_utils import (
    convert_qwen_image21_transformer_checkpoint_to_diffusers,
)
from qwenimage21_tiny import QWENIMAGE21_TINY
from safetensors.torch import save_file

import gpucore
from diffusion.pipelines.bases import base_family, find_base

HEIGHT, WIDTH = 64, 96  # 4 x 6 latents: 24 picture tokens
PROMPT = "a red circle on a blue square, " * 3
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding
TOL_HELD = 0.002  # the same of the GGUF's picture against diffusers' of its values: 0.00091
# (least, most) mean distance of the Q8_0 file's picture from the float model's: measured
# 0.035 (the tiny random model's gain)
FROM_FLOAT = (0.015, 0.08)
PREFIX = "model.diffusion_model."


def comfy_layout(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`model`'s tensors as ComfyUI's file holds them: gate_layer and proj fused into
    gate_up (gate rows first), under PREFIX."""
    state = model.state_dict()
    out = {}
    for key, value in state.items():
        if key.endswith(".img_mlp.proj.weight"):
            continue
        if key.endswith(".img_mlp.gate_layer.weight"):
            up = state[key.replace("gate_layer", "proj")]
            key, value = key.replace("gate_layer", "gate_up"), torch.cat([value, up])
        out[PREFIX + key] = value.contiguous()
    return out


@pytest.mark.nodevice
def test_comfy_layout_reads_as_diffusers(tiny_qwenimage21: tuple[Path, Any],
                                         tmp_path: Path) -> None:
    from diffusion.loaders.qwen_image import load_qwenimage21_file, qwenimage21_family

    _, reference = tiny_qwenimage21
    expected = {k: v.numpy() for k, v in reference.transformer.state_dict().items()}
    tensors = comfy_layout(reference.transformer)
    converted = convert_qwen_image21_transformer_checkpoint_to_diffusers(dict(tensors))
    assert set(converted) == set(expected)  # the test's layout is the one diffusers reads
    for key, value in converted.items():
        np.testing.assert_array_equal(value.numpy(), expected[key], err_msg=key)
    file = tmp_path / "qwen_image_2.1_bf16.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in tensors.items()}, str(file))
    assert qwenimage21_family(file) == "qwen-image-2.1"
    weights = load_qwenimage21_file(file, config={"axes_dims_rope": (4, 6, 6)})
    assert set(weights) == set(expected)
    for key, value in expected.items():
        stored = torch.from_numpy(value).to(torch.bfloat16).float().numpy()
        np.testing.assert_array_equal(weights[key], stored, err_msg=key)
    for name, value in QWENIMAGE21_TINY.items():
        got = weights.config[name]
        assert (tuple(got) if isinstance(value, tuple) else got) == value, name


def _run(model: Path, out: Path, *more: str) -> tuple[str, ...]:
    return ("txt2img", "--model", str(model), "--width", str(WIDTH), "--height", str(HEIGHT),
            "--prompt", PROMPT, "--steps", "2", "--cfg-scale", "1", "--sampler", "diffusers",
            "--rng", "torch", "--seed", "7", "--dtype", "float32", "--out", str(out), *more)


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                           generator=torch.Generator().manual_seed(7), output_type="np").images
    return np.asarray(images[0][..., :3])  # the VAE's alpha channel: ours are opaque


def _base(folder: Path, where: Path) -> Path:
    """A copy of the Qwen-Image 2.1 `folder` without transformer/ at `where`."""
    shutil.copytree(folder, where, ignore=lambda at, names: [
        n for n in names if Path(at) == folder and n == "transformer"])
    return where


@contextmanager
def _holding(model: torch.nn.Module, values: Mapping[str, np.ndarray]) -> Iterator[None]:
    """`model` with `values` (numpy, its own names) loaded for the block, its own weights
    back after it."""
    own = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)).reshape(own[k].shape)
                           for k, v in values.items()})
    try:
        yield
    finally:
        model.load_state_dict(own)


def _diffusers_names(values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """ComfyUI's layout's `values` under diffusers' names, by diffusers' converter."""
    tensors = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in values.items()}
    return {k: v.numpy() for k, v in
            convert_qwen_image21_transformer_checkpoint_to_diffusers(tensors).items()}


def test_qwenimage21_file_with_a_base(first_device: gpucore.Device,
                                      tiny_qwenimage21: tuple[Path, Any], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_qwenimage21
    tensors = {k: v.to(torch.bfloat16) for k, v in comfy_layout(reference.transformer).items()}
    file = tmp_path / "qwen_image_2.1_bf16.safetensors"
    save_file(tensors, str(file))
    base = _base(folder, tmp_path / "base")
    assert base_family(file) == ("Qwen-Image 2.1", "qwen-image-2.1")
    assert find_base(file, [tmp_path / "nothing", base]) == base
    out, _ = cli_ok(capsys, *_run(file, tmp_path / "file.png", "--base", str(base)))
    with _holding(reference.transformer,
                  _diffusers_names({k: v.float().numpy() for k, v in tensors.items()})):
        assert np.abs(png_pixels(out) - _diffusers(reference)).mean() < TOL
    error = cli_error(capsys, *_run(file, tmp_path / "x.png"))
    assert "transformer alone" in error and "--base" in error, error
    assert not (tmp_path / "x.png").exists()


def test_qwenimage21_gguf(first_device: gpucore.Device, tiny_qwenimage21: tuple[Path, Any],
                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gguf", reason="GGUF files need the gguf package")
    import gguf

    from diffusion.loaders.formats.gguf_write import write_gguf

    folder, reference = tiny_qwenimage21
    tensors = {k: v.numpy() for k, v in comfy_layout(reference.transformer).items()}
    file = tmp_path / "qwen-image-2.1-Q8_0.gguf"
    counts = write_gguf(file, tensors.items(), "q8_0", architecture="qwen_image_2.1")
    assert counts["q8_0"] >= 8
    held = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).reshape(
        tensors[t.name].shape) for t in gguf.GGUFReader(file).tensors}
    out, _ = cli_ok(capsys, *_run(file, tmp_path / "file.png", "--base",
                                  str(_base(folder, tmp_path / "base"))))
    ours = png_pixels(out)
    with _holding(reference.transformer, _diffusers_names(held)):
        theirs = _diffusers(reference)
    assert np.abs(ours - theirs).mean() < TOL_HELD
    least, most = FROM_FLOAT
    assert least < np.abs(ours - _diffusers(reference)).mean() < most
