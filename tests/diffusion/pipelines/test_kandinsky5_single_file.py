"""A Kandinsky 5 transformer as one file in kandinskylab's layout (`kandinsky5lite_t2i.
safetensors`) through the command line with a Kandinsky 5 folder as `--base` (one without
transformer/): the registry claims the file and finds its base, and the picture is the
diffusers folder's, pixel for pixel, and so diffusers' own; a file without a base and a file
that is no Kandinsky 5 transformer are refused in one line. A Q8_0 GGUF of it and ComfyUI's
scaled fp8 file draw diffusers' picture of the values they hold, near the float model's."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
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
# the same of a quantized file's picture against diffusers' of its values: measured 0.00092
# (Q8_0 and scaled fp8)
TOL_HELD = 0.002
# (least, most) mean distance of a quantized file's picture from the float model's:
# measured 0.0023 (Q8_0) and 0.022 (scaled fp8)
FROM_FLOAT = {"Q8_0.gguf": (0.0015, 0.005), "fp8_scaled.safetensors": (0.01, 0.05)}


def _run(folder_or_file: Path, out: Path, *more: str) -> tuple[str, ...]:
    return ("txt2img", "--model", str(folder_or_file), "--width", str(WIDTH), "--height",
            str(HEIGHT), "--prompt", PROMPT, "--steps", "2", "--cfg-scale", "2.5", "--sampler",
            "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32", "--out",
            str(out), *more)


def _base(folder: Path, where: Path) -> Path:
    """A copy of the Kandinsky 5 `folder` without transformer/ at `where`."""
    shutil.copytree(folder, where, ignore=lambda at, names: [
        n for n in names if Path(at) == folder and n == "transformer"])
    return where


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        return reference(PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                         guidance_scale=2.5, generator=torch.Generator().manual_seed(7),
                         output_type="np").image[0]


@contextmanager
def _holding(model: torch.nn.Module, values: dict[str, np.ndarray]) -> Iterator[None]:
    """`model` with `values` loaded for the block, its own weights back after it."""
    own = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in
                           values.items()})
    try:
        yield
    finally:
        model.load_state_dict(own)


def test_kandinsky5_file_with_a_base(first_device: gpucore.Device,
                                     tiny_kandinsky5: tuple[Path, Any], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_kandinsky5
    # the original layout's names are diffusers' (tests/diffusion/loaders/
    # test_kandinsky5_file.py checks them against kandinskylab's model code)
    file = tmp_path / "kandinsky5lite_t2i.safetensors"
    save_file({k: v.contiguous() for k, v in reference.transformer.state_dict().items()},
              str(file))
    base = _base(folder, tmp_path / "base")
    assert base_family(file) == ("Kandinsky 5", "kandinsky-5")
    assert find_base(file, [tmp_path / "nothing", base]) == base
    capabilities = capabilities_of(file)
    assert capabilities is not None and capabilities.family == "kandinsky-5"

    out, _ = cli_ok(capsys, *_run(folder, tmp_path / "folder.png"))
    expected = png_pixels(out)
    out, _ = cli_ok(capsys, *_run(file, tmp_path / "file.png", "--base", str(base)))
    assert np.abs(png_pixels(out) - expected).max() == 0
    assert np.abs(expected - _diffusers(reference)).mean() < TOL

    error = cli_error(capsys, *_run(file, tmp_path / "x.png"))
    assert "transformer alone" in error and "--base" in error, error
    other = tmp_path / "other.safetensors"
    save_file({"visual_transformer_blocks.0.weight": torch.zeros(2)}, str(other))
    error = cli_error(capsys, *_run(other, tmp_path / "x.png", "--base", str(base)))
    assert "other.safetensors holds none" in error and "Kandinsky 5" in error, error
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("form", ["Q8_0.gguf", "fp8_scaled.safetensors"])
def test_quantized_kandinsky5_file(first_device: gpucore.Device,
                                   tiny_kandinsky5: tuple[Path, Any], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str], form: str) -> None:
    """The transformer as city96's Q8_0 GGUF (the attention and feed-forward matrices Q8_0,
    gguf-py dequantizing them for diffusers) and as ComfyUI's scaled fp8 (t5_files.scaled_fp8),
    under --base: diffusers' picture with the file's values, which is not the float model's
    but near it."""
    from sd_tiny import state_dict

    folder, reference = tiny_kandinsky5
    tensors = state_dict(reference.transformer)
    file = tmp_path / f"kandinsky5lite_t2i_{form}"
    if form.endswith(".gguf"):
        pytest.importorskip("gguf", reason="GGUF files need the gguf package")
        import gguf

        from diffusion.loaders.formats.gguf_write import write_gguf

        assert write_gguf(file, tensors.items(), "q8_0", architecture="kandinsky5")["q8_0"] >= 16
        held = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).reshape(
            tensors[t.name].shape) for t in gguf.GGUFReader(file).tensors}
    else:
        from t5_files import scaled_fp8

        stored, held = scaled_fp8(reference.transformer.state_dict(), "model.diffusion_model.")
        save_file(stored, str(file))
    out, _ = cli_ok(capsys, *_run(file, tmp_path / "file.png", "--base",
                                  str(_base(folder, tmp_path / "base"))))
    ours = png_pixels(out)
    with _holding(reference.transformer, held):
        theirs = _diffusers(reference)
    assert np.abs(ours - theirs).mean() < TOL_HELD
    least, most = FROM_FLOAT[form]
    assert least < np.abs(ours - _diffusers(reference)).mean() < most
