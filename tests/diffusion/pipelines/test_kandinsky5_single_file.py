"""A Kandinsky 5 transformer as one file in kandinskylab's layout (`kandinsky5lite_t2i.
safetensors`) through the command line with a Kandinsky 5 folder as `--base` (one without
transformer/): the registry claims the file and finds its base, and the picture is the
diffusers folder's, pixel for pixel, and so diffusers' own; a file without a base and a file
that is no Kandinsky 5 transformer are refused in one line."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from safetensors.torch import save_file

import gpucore
from diffusion.pipelines.bases import base_family, find_base
from diffusion.pipelines.families import capabilities_of

HEIGHT, WIDTH = 24, 40  # flow_fixtures' tiny_kandinsky5 is sized for it
PROMPT = "a red circle on a blue square"
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding


def _run(folder_or_file: Path, out: Path, *more: str) -> tuple[str, ...]:
    return ("txt2img", "--model", str(folder_or_file), "--width", str(WIDTH), "--height",
            str(HEIGHT), "--prompt", PROMPT, "--steps", "2", "--cfg-scale", "2.5", "--sampler",
            "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32", "--out",
            str(out), *more)


def test_kandinsky5_file_with_a_base(first_device: gpucore.Device,
                                     tiny_kandinsky5: tuple[Path, Any], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_kandinsky5
    # the original layout's names are diffusers' (tests/diffusion/loaders/
    # test_kandinsky5_file.py checks them against kandinskylab's model code)
    file = tmp_path / "kandinsky5lite_t2i.safetensors"
    save_file({k: v.contiguous() for k, v in reference.transformer.state_dict().items()},
              str(file))
    base = tmp_path / "base"
    shutil.copytree(folder, base, ignore=lambda where, names: [
        n for n in names if Path(where) == folder and n == "transformer"])
    assert base_family(file) == ("Kandinsky 5", "kandinsky-5")
    assert find_base(file, [tmp_path / "nothing", base]) == base
    capabilities = capabilities_of(file)
    assert capabilities is not None and capabilities.family == "kandinsky-5"

    out, _ = cli_ok(capsys, *_run(folder, tmp_path / "folder.png"))
    expected = png_pixels(out)
    out, _ = cli_ok(capsys, *_run(file, tmp_path / "file.png", "--base", str(base)))
    assert np.abs(png_pixels(out) - expected).max() == 0
    with torch.no_grad():
        theirs = reference(PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                           guidance_scale=2.5, generator=torch.Generator().manual_seed(7),
                           output_type="np").image[0]
    assert np.abs(expected - theirs).mean() < TOL

    error = cli_error(capsys, *_run(file, tmp_path / "x.png"))
    assert "transformer alone" in error and "--base" in error, error
    other = tmp_path / "other.safetensors"
    save_file({"visual_transformer_blocks.0.weight": torch.zeros(2)}, str(other))
    error = cli_error(capsys, *_run(other, tmp_path / "x.png", "--base", str(base)))
    assert "other.safetensors holds none" in error and "Kandinsky 5" in error, error
    assert not (tmp_path / "x.png").exists()
