"""Which of a server's CLIP image encoders an IP-Adapter unit takes (`serve --image-encoder`):
the one whose output width its adapter reads, the one its module names where several fit, and
messages naming what is missing. Encoders are config.json folders (their weights are not read)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffusion.loaders.errors import WeightsError
from diffusion.server.catalog.image_encoders import ImageEncoders

safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="writes the test files")

pytestmark = pytest.mark.nodevice


def _encoder(root: Path, name: str, hidden: int, projection: int) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden_size": hidden,
                                                    "projection_dim": projection}))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def _adapter(root: Path, name: str, key: str, width: int) -> Path:
    path = root / f"{name}.safetensors"
    safetensors_numpy.save_file({key: np.zeros((8, width), np.float32),
                                 "ip_adapter.1.to_k_ip.weight": np.zeros((4, 4), np.float32)},
                                str(path))
    return path


def test_choose_by_width_then_module(tmp_path: Path) -> None:
    small = _encoder(tmp_path, "small", 32, 24)
    vit_h = _encoder(tmp_path, "vit_h", 1280, 1024)
    big_g = _encoder(tmp_path, "big_g", 1664, 24)  # fits 24-wide embeddings too
    encoders = ImageEncoders([small, vit_h, big_g])
    plain24 = _adapter(tmp_path, "plain24", "image_proj.proj.weight", 24)
    plain1024 = _adapter(tmp_path, "ip-adapter_sd15", "image_proj.proj.weight", 1024)
    plus1280 = _adapter(tmp_path, "ip-adapter-plus_sd15", "image_proj.proj_in.weight", 1280)
    assert encoders.choose("ip-adapter_clip_g", plain24) == big_g  # the module's, of two
    assert encoders.choose("ip-adapter_clip_sdxl", plain24) == big_g
    assert encoders.choose("ip-adapter_clip_h", plain24) == small  # none named: the first
    assert encoders.choose("ip-adapter-auto", plain24) == small
    assert encoders.choose("ip-adapter_clip_g", plain1024) == vit_h  # the only one that fits
    assert encoders.choose("ip-adapter_clip_sd15", plus1280) == vit_h  # hidden states
    odd = _adapter(tmp_path, "odd", "image_proj.proj.weight", 40)
    with pytest.raises(ValueError, match=r"odd reads 40-wide image embeddings; none of this "
                                         r"server's image encoders gives that \(small \(24\), "
                                         r"vit_h \(1024\), big_g \(24\)\)"):
        encoders.choose("ip-adapter_clip_h", odd)
    with pytest.raises(ValueError, match="has none: start it with --image-encoder PATH"):
        ImageEncoders().choose("ip-adapter_clip_h", plain24)


def test_bad_encoder_paths_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"--image-encoder .*missing.* does not exist"):
        ImageEncoders([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match=r"--image-encoder: .*empty: no model\.safetensors"):
        ImageEncoders([tmp_path / "empty"])
    not_clip = tmp_path / "vae.safetensors"
    safetensors_numpy.save_file({"decoder.conv_in.weight": np.zeros((2, 2), np.float32)},
                                str(not_clip))
    with pytest.raises(WeightsError, match="not a CLIP vision model"):
        ImageEncoders([not_clip])
