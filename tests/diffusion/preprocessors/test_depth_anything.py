"""Depth Anything V2 against transformers' DepthAnythingForDepthEstimation (tiny random models,
torch CPU), and the depth_anything_v2 map against the ControlNet extension's steps written out
with OpenCV and torch (test references only)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is a test-only reference "
                                        "(extra: reference)")
torch = pytest.importorskip("torch", reason="torch is a test-only reference (extra: reference)")
transformers = pytest.importorskip("transformers", reason="test-only reference")
from sd_tiny import randomized  # noqa: E402
from support import assert_close  # noqa: E402

import gpucore  # noqa: E402
from diffusion.loaders.control.depth_anything_file import load_depth_anything  # noqa: E402
from diffusion.loaders.errors import WeightsError  # noqa: E402
from diffusion.preprocessors import depth, module_list, preprocess  # noqa: E402


def _tiny(hidden: int, heads: int, seed: int) -> Any:
    backbone = transformers.Dinov2Config(
        hidden_size=hidden, num_hidden_layers=4, num_attention_heads=heads, mlp_ratio=2,
        image_size=56, patch_size=14, out_indices=[1, 2, 3, 4], layerscale_value=0.5,
        reshape_hidden_states=False)
    config = transformers.DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=hidden,
        neck_hidden_sizes=[8, 16, 24, 32], fusion_hidden_size=16, head_hidden_size=8)
    return randomized(transformers.DepthAnythingForDepthEstimation(config), seed, scale=0.2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    model = _tiny(32, 2, 3)
    folder = tmp_path_factory.mktemp("depth-anything")
    model.save_pretrained(folder)
    return model, folder


def test_module_is_registered() -> None:
    assert "depth_anything_v2" in module_list()


def test_depth_matches_transformers(device: gpucore.Device, tiny: tuple[Any, Path]) -> None:
    """Its own grid (4x4 patches: the position table as it is) and others (resampled)."""
    reference, folder = tiny
    ours = load_depth_anything(folder, device=device)
    for shape in ((56, 56), (42, 70)):
        pixels = np.random.default_rng(sum(shape)).standard_normal((2, 3, *shape))
        pixels = pixels.astype(np.float32)
        with torch.no_grad():
            want = reference(torch.from_numpy(pixels)).predicted_depth.numpy()
        assert_close(ours(pixels).numpy(), want, tol=1e-4)
        assert want.std() > 0


def test_single_file_reads_its_config_from_the_shapes(first_device: gpucore.Device,
                                                       tmp_path: Path) -> None:
    """A lone model.safetensors: heads of 64 (one at this width), features from every
    quarter of the layers, the position grid from the table."""
    reference = _tiny(64, 1, 4)
    reference.save_pretrained(tmp_path / "folder")
    shutil.copy(tmp_path / "folder" / "model.safetensors", tmp_path / "da.safetensors")
    ours = load_depth_anything(tmp_path / "da.safetensors", device=first_device)
    pixels = np.random.default_rng(1).standard_normal((1, 3, 42, 56)).astype(np.float32)
    with torch.no_grad():
        want = reference(torch.from_numpy(pixels)).predicted_depth.numpy()
    assert_close(ours(pixels).numpy(), want, tol=1e-4)
    with pytest.raises(WeightsError, match="no such"):
        load_depth_anything(tmp_path / "missing.safetensors", device=first_device)


def _extension_map(model: Any, image: np.ndarray, side: int) -> np.ndarray:
    """annotator/depth_anything_v2.py's DepthAnythingV2Detector(image, colored=False), with the
    Depth Anything transform (Resize lower_bound `side` (518) / 14, INTER_CUBIC; ImageNet
    normalize)."""
    h, w = image.shape[:2]
    scale = max(side / h, side / w)

    def constrain(x: float) -> int:
        y = int(np.round(x / 14) * 14)
        return int(np.ceil(x / 14) * 14) if y < side else y

    size = (constrain(scale * w), constrain(scale * h))
    picture = cv2.cvtColor(image, cv2.COLOR_BGR2RGB) / 255.0
    picture = cv2.resize(picture, size, interpolation=cv2.INTER_CUBIC)
    picture = (picture - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    pixels = torch.from_numpy(np.ascontiguousarray(picture.transpose(2, 0, 1))[None].astype(
        np.float32))
    with torch.no_grad():
        out = model(pixels).predicted_depth
        out = torch.nn.functional.interpolate(out[None], (h, w), mode="bilinear",
                                              align_corners=False)[0, 0]
    out = (out - out.min()) / (out.max() - out.min()) * 255.0
    return out.numpy().astype(np.uint8)


def test_map_matches_the_extension(first_device: gpucore.Device, tiny: tuple[Any, Path],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """At a network size of 98 instead of 518 on both sides (the tiny model on lavapipe: the
    steps are the same, the test 20x cheaper); network_size's rounding at 518 separately."""
    assert depth.network_size(512, 512) == (518, 518)
    assert depth.network_size(512, 768) == (518, 784)  # 777: 55.5 patches rounds to even
    assert depth.network_size(300, 200) == (784, 518)
    monkeypatch.setattr(depth, "_SIZE", 98)
    reference, folder = tiny
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:45, 0:61]
    image = np.stack([x * 4, y * 5, (x * y) % 255], axis=-1) + rng.integers(0, 30, (45, 61, 3))
    image = image.clip(0, 255).astype(np.uint8)
    monkeypatch.setenv(depth.ENV_VAR, str(folder))
    got = preprocess("depth_anything_v2", image, device=first_device)
    want = _extension_map(reference, image, 98)
    assert got.shape == (45, 61, 3) and (got == got[:, :, :1]).all()
    differ = np.abs(got[:, :, 0].astype(int) - want)
    assert differ.max() <= 1 and (differ > 0).sum() <= 10, (differ.max(), (differ > 0).sum())
    assert want.std() > 10
    monkeypatch.delenv(depth.ENV_VAR)
    depth.set_model_path(None)
    with pytest.raises(ValueError, match="DEPTH_ANYTHING_V2_MODEL"):
        preprocess("depth_anything_v2", image, device=first_device)
