"""A Krea 2 transformer as one file in Krea's original layout through the command line with a
Krea 2 folder as `--base` (one without transformer/): the registry claims the file and finds
its base, and the picture is diffusers' own; a Q8_0 GGUF of it draws diffusers' picture of the
values it holds, near the float model's; a file without a base is refused in one line."""

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
from krea2_tiny import original_layout
from safetensors.torch import save_file

import gpucore
from diffusion.pipelines.bases import base_family, find_base
from diffusion.pipelines.families import capabilities_of

HEIGHT, WIDTH = 24, 40  # 3 x 5 patches of 2 x 2 latents (the tiny VAE's 4x)
PROMPT = "a red circle on a blue square"
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding
TOL_HELD = 0.002  # the same of the GGUF's picture against diffusers' of its values: 0.00095
# (least, most) mean distance of the Q8_0 file's picture from the float model's: measured
# 0.010
FROM_FLOAT = (0.005, 0.03)


def _run(model: Path, out: Path, *more: str) -> tuple[str, ...]:
    return ("txt2img", "--model", str(model), "--width", str(WIDTH), "--height", str(HEIGHT),
            "--prompt", PROMPT, "--steps", "2", "--cfg-scale", "3", "--sampler", "diffusers",
            "--rng", "torch", "--seed", "7", "--dtype", "float32", "--out", str(out), *more)


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                           guidance_scale=2.0, generator=torch.Generator().manual_seed(7),
                           output_type="np").images
    return np.asarray(images[0])


def _base(folder: Path, where: Path) -> Path:
    """A copy of the Krea 2 `folder` without transformer/ at `where`."""
    shutil.copytree(folder, where, ignore=lambda at, names: [
        n for n in names if Path(at) == folder and n == "transformer"])
    return where


@contextmanager
def _holding(model: torch.nn.Module, values: Mapping[str, Any]) -> Iterator[None]:
    """`model` with `values` (numpy, its own names, any shape of as many values) loaded for
    the block, its own weights back after it."""
    own = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)).reshape(own[k].shape)
                           for k, v in values.items()})
    try:
        yield
    finally:
        model.load_state_dict(own)


def test_krea2_file_with_a_base(first_device: gpucore.Device, tiny_krea2: tuple[Path, Any],
                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_krea2
    file = tmp_path / "krea2_bf16.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in
               original_layout(reference.transformer, "model.diffusion_model.").items()},
              str(file))
    base = _base(folder, tmp_path / "base")
    assert base_family(file) == ("Krea 2", "krea-2")
    assert find_base(file, [tmp_path / "nothing", base]) == base
    capabilities = capabilities_of(file)
    assert capabilities is not None and capabilities.family == "krea-2"
    out, _ = cli_ok(capsys, *_run(file, tmp_path / "file.png", "--base", str(base)))
    ours = png_pixels(out)
    state = reference.transformer.state_dict()
    with _holding(reference.transformer, {k: v.to(torch.bfloat16).float().numpy()
                                          for k, v in state.items()}):  # the file's values
        assert np.abs(ours - _diffusers(reference)).mean() < TOL
    error = cli_error(capsys, *_run(file, tmp_path / "x.png"))
    assert "transformer alone" in error and "--base" in error, error
    assert not (tmp_path / "x.png").exists()


def test_krea2_gguf(first_device: gpucore.Device, tiny_krea2: tuple[Path, Any], tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    """city96-style Q8_0 (the 64-wide matrices Q8_0, gguf-py dequantizing them for
    diffusers)."""
    pytest.importorskip("gguf", reason="GGUF files need the gguf package")
    import gguf

    from diffusion.loaders.formats.gguf_write import write_gguf

    folder, reference = tiny_krea2
    tensors = {k: v.numpy() for k, v in original_layout(reference.transformer).items()}
    file = tmp_path / "krea2-Q8_0.gguf"
    assert write_gguf(file, tensors.items(), "q8_0", architecture="krea2")["q8_0"] >= 8
    held = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).reshape(
        tensors[t.name].shape) for t in gguf.GGUFReader(file).tensors}
    out, _ = cli_ok(capsys, *_run(file, tmp_path / "file.png", "--base",
                                  str(_base(folder, tmp_path / "base"))))
    ours = png_pixels(out)
    # original_layout keeps the state dict's order: the file's names pair with diffusers'
    names = dict(zip(tensors, reference.transformer.state_dict(), strict=True))
    with _holding(reference.transformer, {names[k]: v for k, v in held.items()}):
        theirs = _diffusers(reference)
    assert np.abs(ours - theirs).mean() < TOL_HELD
    least, most = FROM_FLOAT
    assert least < np.abs(ours - _diffusers(reference)).mean() < most

