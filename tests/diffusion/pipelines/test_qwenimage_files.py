"""Qwen-Image's file forms as ComfyUI users have them: the split diffusion model file (its
names diffusers', under model.diffusion_model. or bare) and a GGUF of it with a Qwen-Image
folder as --base, and ComfyUI's Qwen2.5-VL text encoder file (the language model beside its
vision tower) in place of the folder's text_encoder/: the folder's own picture, and one line
for a missing or wrong companion."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
from PIL import Image
from qwenimage_tiny import QWENIMAGE_TINY, tiny_qwenimage_pipeline
from safetensors.torch import save_file
from sd_tiny import state_dict

import diffusion.cli.main as cli
import gpucore
from diffusion.infotext import read_infotext
from diffusion.loaders import WeightsError
from diffusion.loaders.qwen_image import load_qwenimage_file, qwenimage_family

SIZE = ("--width", "40", "--height", "24")
RED = "a red circle on a blue square, " * 6
COMMON = ("txt2img", "--prompt", RED, *SIZE, "--steps", "2", "--sampler", "diffusers",
          "--rng", "torch", "--seed", "7", "--dtype", "float32", "--cfg-scale", "1")


@pytest.fixture(scope="module")
def tiny_qwenimage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-qwen-image-files")
    return root / "qwen-image", tiny_qwenimage_pipeline(root)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out.strip(), err


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = cli.main(list(argv))
    _, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and "Traceback" not in err and len(errors) == 1, err
    return errors[0]


def _pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), np.float32) / 255


def _comfyui_file(model: Any, path: Path, prefix: str = "model.diffusion_model.") -> Path:
    save_file({prefix + k: v.detach().clone() for k, v in model.state_dict().items()},
              str(path))
    return path


@pytest.mark.nodevice
@pytest.mark.parametrize("prefix", ["model.diffusion_model.", ""])
def test_file_reads_as_diffusers(tiny_qwenimage: tuple[Path, Any], tmp_path: Path,
                                 prefix: str) -> None:
    _, reference = tiny_qwenimage
    file = _comfyui_file(reference.transformer, tmp_path / "qwen_image.safetensors", prefix)
    assert qwenimage_family(file) == "qwen-image"
    weights = load_qwenimage_file(file, config={"axes_dims_rope": (4, 6, 6)})
    expected = state_dict(reference.transformer)
    assert set(weights) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    for name in ("in_channels", "out_channels", "num_layers", "attention_head_dim",
                 "num_attention_heads", "joint_attention_dim", "patch_size"):
        assert weights.config[name] == QWENIMAGE_TINY[name], name


@pytest.mark.nodevice
def test_other_files_are_not_claimed(tiny_qwenimage: tuple[Path, Any], tmp_path: Path) -> None:
    import torch

    file = tmp_path / "other.safetensors"
    save_file({"transformer_blocks.0.weight": torch.zeros(2)}, str(file))
    assert qwenimage_family(file) is None
    with pytest.raises(WeightsError, match="not a Qwen-Image transformer file"):
        load_qwenimage_file(file)
    _, reference = tiny_qwenimage
    edit = {k: v.detach().clone() for k, v in reference.transformer.state_dict().items()}
    edit["__index_timestep_zero__"] = torch.zeros(0)
    save_file(edit, str(tmp_path / "qwen_image_edit_2511.safetensors"))
    with pytest.raises(WeightsError, match=r"Qwen-Image-Edit 2511 .* not supported"):
        load_qwenimage_file(tmp_path / "qwen_image_edit_2511.safetensors")


def test_transformer_file_with_base(first_device: gpucore.Device,
                                    tiny_qwenimage: tuple[Path, Any], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """ComfyUI's split diffusion model file with the folder as --base: the folder's own
    picture bitwise, a GGUF of it near it; without --base, or a folder given --base, one
    line each."""
    folder, reference = tiny_qwenimage
    file = _comfyui_file(reference.transformer, tmp_path / "qwen_image_bf16.safetensors")
    out, err = _run(capsys, *COMMON, "--model", str(file), "--base", str(folder),
                    "--out", str(tmp_path / "file.png"))
    assert "model: qwen_image_bf16 (qwen-image)" in err
    single = _pixels(out)
    out, _ = _run(capsys, *COMMON, "--model", str(folder), "--out", str(tmp_path / "dir.png"))
    np.testing.assert_array_equal(single, _pixels(out))
    assert "--base" in _error(capsys, *COMMON, "--model", str(file),
                              "--out", str(tmp_path / "x.png"))
    assert "leave --base out" in _error(capsys, *COMMON, "--model", str(folder), "--base",
                                        str(folder), "--out", str(tmp_path / "x.png"))
    pytest.importorskip("gguf", reason="GGUF files need the gguf package")
    from diffusion.loaders.formats.gguf_write import write_gguf

    gguf = tmp_path / "qwen-image-Q8_0.gguf"
    write_gguf(gguf, state_dict(reference.transformer).items(), "q8_0",
               architecture="qwen_image")
    out, _ = _run(capsys, *COMMON, "--model", str(gguf), "--base", str(folder),
                  "--out", str(tmp_path / "gguf.png"))
    assert np.abs(_pixels(out) - single).mean() < 0.01


def test_text_encoder_file(first_device: gpucore.Device, tiny_qwenimage: tuple[Path, Any],
                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ComfyUI's Qwen2.5-VL file (transformers 4's names: the language model under model.,
    the vision tower under visual., lm_head) with a folder whose text_encoder/ holds its
    config alone: the folder's own picture, the file named in the infotext; a file whose
    attention has no biases (no Qwen2.5-VL) gets one line."""
    folder, reference = tiny_qwenimage
    state = {}
    for key, value in reference.text_encoder.state_dict().items():
        key = key.replace("model.language_model.", "model.").replace("model.visual.",
                                                                     "visual.")
        state[key] = value.detach().clone()
    assert "visual.merger.mlp.0.weight" in state and "lm_head.weight" in state
    save_file(state, str(tmp_path / "qwen_2.5_vl_7b.safetensors"))
    slim = tmp_path / "qwen-image"
    shutil.copytree(folder, slim)
    for weights in (slim / "text_encoder").glob("*.safetensors*"):
        weights.unlink()
    out, _ = _run(capsys, *COMMON, "--model", str(slim), "--text-encoder",
                  str(tmp_path / "qwen_2.5_vl_7b.safetensors"), "--out",
                  str(tmp_path / "te.png"))
    text = read_infotext(out)
    assert text is not None and "Module 1: qwen_2.5_vl_7b" in text
    single = _pixels(out)
    out, _ = _run(capsys, *COMMON, "--model", str(folder), "--out", str(tmp_path / "dir.png"))
    np.testing.assert_array_equal(single, _pixels(out))
    unbiased = {k: v for k, v in state.items() if not k.endswith("_proj.bias")}
    save_file(unbiased, str(tmp_path / "qwen3.safetensors"))
    assert "not a Qwen2.5-VL text encoder" in _error(
        capsys, *COMMON, "--model", str(slim), "--text-encoder",
        str(tmp_path / "qwen3.safetensors"), "--out", str(tmp_path / "x.png"))
