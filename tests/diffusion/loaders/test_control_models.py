"""Control models by name (as the ControlNet extension lists and finds them) and by kind (what
load_control_model dispatches on: ControlNet, T2I-Adapter, IP-Adapter)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from diffusion.loaders.control.catalog import (
    LOADERS,
    ControlModelDir,
    load_control_model,
    model_kind,
    short_hash,
)
from diffusion.loaders.control.ip_adapter_file import ip_adapter_reads, load_ip_adapter
from diffusion.loaders.errors import WeightsError

safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="writes the test files")

pytestmark = pytest.mark.nodevice


def _tensors(*names: str) -> dict[str, np.ndarray]:
    return {name: np.zeros((2, 2), np.float32) for name in names}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "ControlNet"
    (root / "sd15").mkdir(parents=True)
    safetensors_numpy.save_file(_tensors("control_model.input_hint_block.0.weight"),
                                str(root / "sd15" / "control_v11p_sd15_canny.safetensors"))
    safetensors_numpy.save_file(_tensors("image_proj.proj.weight", "ip_adapter.1.to_k_ip.weight"),
                                str(root / "ip-adapter_sd15.safetensors"))
    big = root / "control_v11f1p_sd15_depth.pth"
    big.write_bytes(np.random.default_rng(0).integers(0, 256, 0x120000, np.uint8).tobytes())
    diffusers_folder = root / "controlnet-canny-sdxl-1.0"
    diffusers_folder.mkdir()
    (diffusers_folder / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel"}))
    safetensors_numpy.save_file(_tensors("controlnet_mid_block.weight"),
                                str(diffusers_folder / "diffusion_pytorch_model.safetensors"))
    (root / "notes.txt").write_text("not a model")
    return root


def test_listing_names_and_hashes(folder: Path) -> None:
    models = ControlModelDir(folder)
    names = [entry.name for entry in models.entries]
    assert names == ["control_v11f1p_sd15_depth", "control_v11p_sd15_canny",
                     "controlnet-canny-sdxl-1.0", "ip-adapter_sd15"]
    depth = folder / "control_v11f1p_sd15_depth.pth"
    with open(depth, "rb") as file:  # the WebUI's model_hash: 64 KiB at 1 MiB
        file.seek(0x100000)
        want = hashlib.sha256(file.read(0x10000)).hexdigest()[:8]
    assert short_hash(depth) == want
    assert f"control_v11f1p_sd15_depth [{want}]" in models.titles()
    assert short_hash(folder / "controlnet-canny-sdxl-1.0") == hashlib.sha256(b"").hexdigest()[:8]


def test_find_as_the_extension(folder: Path) -> None:
    models = ControlModelDir(folder)
    canny = next(e for e in models.entries if e.name == "control_v11p_sd15_canny")
    assert models.find(canny.title) == canny
    assert models.find("CONTROL_V11P_SD15_CANNY") == canny
    assert models.find("control_v11p_sd15_canny [00000000]") == canny  # another hash
    assert models.find("sd15_canny") == canny  # part of a name: the shortest name holding it
    assert models.find("canny").name == "control_v11p_sd15_canny"
    assert models.find("openpose") is None
    with pytest.raises(FileNotFoundError, match="--controlnet-dir"):
        ControlModelDir(folder / "missing")


def test_kinds_and_dispatch(folder: Path) -> None:
    assert model_kind(folder / "sd15" / "control_v11p_sd15_canny.safetensors") == "controlnet"
    assert model_kind(folder / "controlnet-canny-sdxl-1.0") == "controlnet"
    assert model_kind(folder / "ip-adapter_sd15.safetensors") == "ip_adapter"
    assert LOADERS["ip_adapter"] is load_ip_adapter
    assert ip_adapter_reads(folder / "ip-adapter_sd15.safetensors") == (False, 2)
    with pytest.raises(WeightsError, match=r"ip-adapter_sd15\.safetensors: not an IP-Adapter "
                                           r"this program reads"):  # no image_proj.norm
        load_control_model(folder / "ip-adapter_sd15.safetensors")
    with pytest.raises(WeightsError, match=r"notes\.txt: not a valid safetensors"):
        model_kind(folder / "notes.txt")
    safetensors_numpy.save_file(_tensors("first_stage_model.encoder.conv_in.weight"),
                                str(folder / "vae.safetensors"))
    with pytest.raises(WeightsError, match=r"vae\.safetensors: not a ControlNet"):
        model_kind(folder / "vae.safetensors")
    with pytest.raises(WeightsError, match="no such"):
        model_kind(folder / "missing.safetensors")
