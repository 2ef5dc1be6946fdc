"""Tencent's single HunyuanImage 2.1 transformer file through the command line with a
HunyuanImage 2.1 folder as `--base` (one without transformer/): the registry claims the file
and finds its base, the picture is diffusers' own, and the file without a base is refused in
one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
from cli_support import cli_error, cli_ok, png_pixels
from hunyuanimage_parts_tiny import diffusers_picture, tiny_hunyuanimage_pipeline
from hunyuanimage_tiny import original_layout
from safetensors.numpy import save_file
from sd_tiny import state_dict

import gpucore
from diffusion.pipelines.bases import base_family, find_base
from diffusion.pipelines.families import capabilities_of

PROMPT = 'a shop sign that says "OPEN" in red'
TOL = 0.003  # mean |ours - diffusers| in [0, 1]: the PNG's rounding (the folder's: 9e-4)


def test_single_file_with_a_base(first_device: gpucore.Device, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    reference = tiny_hunyuanimage_pipeline(tmp_path / "full")
    folder = tmp_path / "full" / "hunyuanimage"
    file = tmp_path / "hunyuanimage2.1.safetensors"
    save_file(original_layout(state_dict(reference.transformer), fused=True), file)
    base = tmp_path / "base"
    shutil.copytree(folder, base, ignore=lambda at, names: [
        n for n in names if Path(at) == folder and n == "transformer"])
    assert base_family(file) == ("HunyuanImage 2.1 (base, distilled)", "hunyuanimage-2.1")
    assert find_base(file, [tmp_path / "full", base]) == base
    capabilities = capabilities_of(file)
    assert capabilities is not None and capabilities.guidance == "cfg"
    common = ("txt2img", "--model", str(file), "--width", "24", "--height", "32",
              "--steps", "3", "--rng", "torch", "--seed", "7", "--dtype", "float32",
              "--prompt", PROMPT, "--cfg-scale", "3.5")
    out, _ = cli_ok(capsys, *common, "--base", str(base), "--out", str(tmp_path / "a.png"))
    expected = diffusers_picture(reference, PROMPT, height=32, width=24,
                                 num_inference_steps=3)[0]
    assert np.abs(png_pixels(out) - expected).mean() < TOL
    assert "give a HunyuanImage 2.1 diffusers folder with --base" in cli_error(capsys, *common)
