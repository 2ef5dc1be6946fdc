"""mlsd against controlnet_aux's MLSDdetector on the same random M-LSD saved as the annotator
file (mlsd_large_512_fp32.pth) with torch.save, and its line drawing against cv2.line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is a test-only reference "
                                        "(extra: reference)")
torch = pytest.importorskip("torch", reason="torch is a test-only reference (extra: reference)")
from controlnet_aux_ref import controlnet_aux  # noqa: E402
from sd_tiny import randomized  # noqa: E402

import gpucore  # noqa: E402
from diffusion.loaders.control import annotator_file  # noqa: E402
from diffusion.loaders.errors import WeightsError  # noqa: E402
from diffusion.preprocessors import mlsd, module_detail, preprocess  # noqa: E402
from diffusion.preprocessors.mlsd import draw_line, mlsd_segments  # noqa: E402

reference = controlnet_aux("mlsd")
utils = controlnet_aux("mlsd.utils")


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A random M-LSD with batch norms that are not identities, its output conv scaled so
    that centres' scores spread over 0..1 and segments are a few pixels long."""
    folder = tmp_path_factory.mktemp("annotators")
    (folder / "mlsd").mkdir()
    model = randomized(reference.MobileV2_MLSD_Large(), 1, scale=0.2)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                shape = module.weight.shape
                module.weight.copy_(1 + 0.2 * torch.randn(shape, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_var.uniform_(0.5, 1.5, generator=generator)
        model.block23.conv3.weight.mul_(20)
        model.block23.conv3.bias.mul_(20)
    torch.save(model.state_dict(), folder / "mlsd" / "mlsd_large_512_fp32.pth")
    return model, folder


def _picture(seed: int, height: int = 48, width: int = 80) -> np.ndarray:
    """Multiples of the network's 16, not of the extension's 64."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def test_segments_and_map_equal_the_detector(first_device: gpucore.Device,
                                             network: tuple[Any, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The segments before truncation (taken on their way through) to float32 error; the
    drawn map pixel for pixel; the thresholds (threshold_a: score, threshold_b: length) drop
    segments as there."""
    model, folder = network
    monkeypatch.setenv(annotator_file.ENV_VAR, str(folder))
    monkeypatch.setattr(reference, "resize_image", lambda image, resolution: image)
    image = _picture(1)
    segments: list[np.ndarray] = []
    monkeypatch.setattr(mlsd, "mlsd_segments", lambda image, *limits, device=None: (
        segments.append(mlsd_segments(image, *limits, device=device)) or segments[-1]))
    detector = reference.MLSDdetector(model)
    maps = []
    for score, length in ((0.5, 2.0), (0.1, 0.1)):
        want_map = detector(image, score, length, output_type="np")
        maps.append(preprocess("mlsd", image, threshold_a=score, threshold_b=length,
                               device=first_device))
        np.testing.assert_array_equal(maps[-1], want_map)
        with torch.no_grad():
            want = utils.pred_lines(image, model, [48, 80], score, length)
        np.testing.assert_allclose(segments[-1], want, atol=1e-4)
    assert 10 < len(segments[0]) < len(segments[1])  # the thresholds drop some
    assert (maps[1] >= maps[0]).all() and (maps[1] > maps[0]).any()


def test_registered_with_the_extensions_sliders() -> None:
    sliders = module_detail()["mlsd"]["sliders"]
    assert [(s["name"], s["value"]) for s in sliders] == [
        ("Resolution", 512), ("MLSD Value Threshold", 0.1), ("MLSD Distance Threshold", 0.1)]


@pytest.mark.nodevice
def test_lines_are_drawn_as_opencv_draws_them() -> None:
    """Random segments, many of them leaving the canvas (OpenCV's clipping)."""
    rng = np.random.default_rng(4)
    for _ in range(400):
        height, width = (int(v) for v in rng.integers(3, 40, 2))
        x1, y1, x2, y2 = (int(v) for v in rng.integers(-30, 70, 4))
        ours, theirs = np.zeros((height, width), np.uint8), np.zeros((height, width), np.uint8)
        draw_line(ours, x1, y1, x2, y2)
        cv2.line(theirs, (x1, y1), (x2, y2), 255, 1)
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.nodevice
def test_missing_file_names_it_and_the_folder(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(annotator_file.ENV_VAR, str(tmp_path))
    with pytest.raises(WeightsError) as caught:
        preprocess("mlsd", np.zeros((16, 16, 3), np.uint8))
    assert "mlsd_large_512_fp32.pth" in str(caught.value)
    assert str(tmp_path / "mlsd") in str(caught.value)
