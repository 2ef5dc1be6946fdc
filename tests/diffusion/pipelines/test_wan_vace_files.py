"""Wan VACE from single files: a tiny WanVACETransformer3DModel written in Wan VACE's original
names (Comfy-Org's wan2.1_vace_*.safetensors: `vace_blocks.N.before_proj`, `after_proj`,
`vace_patch_embedding` beside the base model's tensors; diffusers' own converter checks the
writer) reads as diffusers' weights, and so does a plain Wan file joined by a VACE module file
(Kijai's Wan2_1-VACE_module_*: the vace_* tensors alone). Through `txt2vid --model FILE --base
FOLDER` (and `--vace-module FILE`, beside a plain Wan folder) they give the VACE folder's
frames bitwise; the base file alone visibly another video; misplaced files get one line.
One frame: the files' reading is under test, the VACE model's frames in
test_wan_vace_pipeline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
from cli_support import cli_error, cli_ok, png_frames
from PIL import Image
from safetensors.torch import save_file
from wan_tiny import torch_state
from wan_vace_tiny import VACE_TINY, tiny_wan_vace_pipeline, vace_original_names

import gpucore
from diffusion.loaders import WeightsError
from diffusion.loaders.wan import WanFiles, load_wan, load_wan_file, wan_file_family

SETTINGS = ("--prompt", "a red cube on a wooden table", "--width", "48", "--height", "32",
            "--frames", "1", "--steps", "1", "--cfg-scale", "4", "--seed", "3", "--dtype",
            "float32")
HEADS = {"num_attention_heads": VACE_TINY["num_attention_heads"],
         "attention_head_dim": VACE_TINY["attention_head_dim"]}


@pytest.fixture(scope="module")
def vace_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, dict]:
    """(the tiny VACE folder, its transformer as one original-names file, as a plain Wan file
    and a VACE module file apart (their stem: `root / "split"`), its state dict)."""
    root = tmp_path_factory.mktemp("tiny-wan-vace-files")
    pipe = tiny_wan_vace_pipeline(root)
    state = torch_state(pipe.transformer)
    original = vace_original_names(state)
    whole = root / "wan2.1_vace_tiny_fp32.safetensors"
    save_file({"model.diffusion_model." + k: v for k, v in original.items()}, str(whole))
    save_file({k: v for k, v in original.items() if not k.startswith("vace_")},
              str(root / "wan2.1_t2v_tiny.safetensors"))
    save_file({k: v for k, v in original.items() if k.startswith("vace_")},
              str(root / "Wan2_1-VACE_module_tiny.safetensors"))
    return root / "wan-vace", whole, root, state


@pytest.mark.nodevice
def test_writer_agrees_with_diffusers(vace_files: tuple[Path, Path, Path, dict]) -> None:
    """The test's original-names writer is the inverse of diffusers' converter."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    state = vace_files[3]
    converted = convert_wan_transformer_to_diffusers(vace_original_names(state))
    assert set(converted) == set(state)
    for key, value in converted.items():
        assert value is state[key], key


@pytest.mark.nodevice
def test_files_read_as_diffusers(vace_files: tuple[Path, Path, Path, dict]) -> None:
    """The whole file, and the base file with the module, hold the folder's tensors in
    diffusers' names; vace_layers from a config naming as many, else spaced as ComfyUI
    spaces them."""
    _, whole, root, state = vace_files
    plain, module = _split(root)
    assert wan_file_family(whole) == "wan-vace" and wan_file_family(plain) == "wan"
    config = {**HEADS, "vace_layers": [0, 2]}
    for weights in (load_wan_file(whole, config=config),
                    load_wan_file(plain, config=config, vace_module=module)):
        assert set(weights) == set(state)
        for key, value in state.items():
            np.testing.assert_array_equal(weights[key], value.numpy(), err_msg=key)
        assert weights.config["_class_name"] == "WanVACETransformer3DModel"
        assert weights.config["vace_layers"] == [0, 2]
        assert weights.config["vace_in_channels"] == VACE_TINY["vace_in_channels"]
    # 2 VACE blocks over 3: every block from 0 (ComfyUI's range(0, 3, 3 // 2)); 1 over 3: [0]
    assert load_wan_file(whole, config=HEADS).config["vace_layers"] == [0, 1]
    assert load_wan_file(plain, config=config).config["_class_name"] == "WanTransformer3DModel"
    assert "vace_layers" not in load_wan_file(plain, config=config).config
    # the transformer file decides VACE or not, whatever the folder's pipeline
    folder = vace_files[0]
    for files, vace in ((WanFiles(transformer=whole), True),
                        (WanFiles(transformer=plain, vace_module=module), True),
                        (WanFiles(transformer=plain), False)):
        assert load_wan(folder, files).vace is vace
    with pytest.raises(WeightsError, match="a VACE module joins a Wan transformer file"):
        load_wan(folder, WanFiles(vace_module=module))
    with pytest.raises(WeightsError, match="a Wan VACE module alone"):
        load_wan_file(module)
    with pytest.raises(WeightsError, match="already a Wan VACE transformer"):
        load_wan_file(whole, vace_module=module)
    with pytest.raises(WeightsError, match="not a Wan VACE module file"):
        load_wan_file(plain, vace_module=plain)


def _split(root: Path) -> tuple[Path, Path]:
    """The base Wan file and the VACE module file of `vace_files`."""
    return root / "wan2.1_t2v_tiny.safetensors", root / "Wan2_1-VACE_module_tiny.safetensors"


def _plain_base(folder: Path, base: Path) -> Path:
    """`folder` copied to `base` as a WanPipeline folder without transformer weights (a Wan
    2.1 text-to-video folder as a VACE file's base)."""
    shutil.copytree(folder, base)
    index = json.loads((base / "model_index.json").read_text())
    (base / "model_index.json").write_text(json.dumps({**index, "_class_name": "WanPipeline"}))
    for weights in (base / "transformer").glob("*.safetensors"):
        weights.unlink()
    return base


def test_vace_files_give_the_folders_frames(first_device: gpucore.Device, tmp_path: Path,
                                            vace_files: tuple[Path, Path, Path, dict],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The whole file, and the base file with --vace-module, beside a WanPipeline folder: the
    VACE folder's frames; the base file alone runs plain Wan, visibly another video, and
    refuses a VACE input before loading."""
    folder, whole, root, _ = vace_files
    plain, module = _split(root)
    base = _plain_base(folder, tmp_path / "plain")
    expected = png_frames(cli_ok(capsys, "txt2vid", "--model", str(folder), *SETTINGS,
                                 "-o", str(tmp_path / "folder"))[0])
    out = cli_ok(capsys, "txt2vid", "--model", str(whole), "--base", str(base), *SETTINGS,
                 "-o", str(tmp_path / "file"))[0]
    np.testing.assert_array_equal(png_frames(out), expected)
    joined = ("txt2vid", "--model", str(plain), "--base", str(base), *SETTINGS)
    out = cli_ok(capsys, *joined, "--vace-module", str(module), "-o", str(tmp_path / "j"))[0]
    np.testing.assert_array_equal(png_frames(out), expected)
    out = cli_ok(capsys, *joined, "-o", str(tmp_path / "alone"))[0]
    assert np.abs(png_frames(out) - expected).mean() > 0.02
    Image.new("RGB", (48, 32)).save(tmp_path / "ref.png")
    assert "--reference-image needs a Wan VACE model" in cli_error(
        capsys, *joined, "--reference-image", str(tmp_path / "ref.png"), "-o",
        str(tmp_path / "x"))


@pytest.mark.nodevice
def test_misplaced_files_get_one_line(vace_files: tuple[Path, Path, Path, dict],
                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    folder, whole, root, _ = vace_files
    plain, module = _split(root)
    out = ("-o", str(tmp_path / "o"))
    for argv, message in (
            (("--model", str(module), "--base", str(folder)),
             "a Wan VACE module alone (its vace_* tensors only), which joins a base Wan file; "
             "give it as --vace-module"),
            (("--model", str(folder), "--vace-module", str(module)),
             "--vace-module joins a Wan transformer file"),
            (("--model", str(plain), "--base", str(folder), "--vace-module", str(plain)),
             "not a Wan VACE module"),
            (("--model", str(whole), "--base", str(folder), "--vace-module", str(module)),
             "already a Wan VACE transformer")):
        assert message in cli_error(capsys, "txt2vid", *SETTINGS, *argv, *out)
