"""lineart_realistic / lineart_coarse against controlnet_aux's LineartDetector on the same
random generators, saved as the annotator files (sk_model.pth, sk_model2.pth) with torch.save."""

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
from diffusion.preprocessors import module_detail, preprocess  # noqa: E402
from diffusion.preprocessors.lineart import lineart_lines  # noqa: E402

reference = controlnet_aux("lineart")


@pytest.fixture(scope="module")
def generators(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path]:
    """Two random generators in an annotator folder: sk_model.pth in the extension's
    `lineart/` subfolder, sk_model2.pth at the top (lllyasviel/Annotators' layout)."""
    folder = tmp_path_factory.mktemp("annotators")
    (folder / "lineart").mkdir()
    fine = randomized(reference.Generator(3, 1, 3), 1, scale=0.25)
    coarse = randomized(reference.Generator(3, 1, 3), 2, scale=0.25)
    torch.save(fine.state_dict(), folder / "lineart" / "sk_model.pth")
    torch.save(coarse.state_dict(), folder / "sk_model2.pth")
    return fine, coarse, folder


def _picture(seed: int, height: int = 37, width: int = 45) -> np.ndarray:
    """Random blobs: sides that are not multiples of the generator's stride of 4."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def test_lines_equal_the_generator(first_device: gpucore.Device, generators: tuple[Any, Any, Path],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The float map before rounding: the generator's output (40x48 for 37x45) resized as
    cv2.INTER_LINEAR, times 255; the picture matters."""
    fine, coarse, folder = generators
    monkeypatch.setenv(annotator_file.ENV_VAR, str(folder))
    image = _picture(3)
    for module, model in (("lineart_realistic", fine), ("lineart_coarse", coarse)):
        with torch.no_grad():
            out = model(torch.from_numpy(image.transpose(2, 0, 1)[None] / 255.0).float())
        assert out.shape[2:] == (40, 48)
        want = cv2.resize(out[0, 0].numpy(), (45, 37), interpolation=cv2.INTER_LINEAR) * 255
        got = lineart_lines(image, module, device=first_device)
        np.testing.assert_allclose(got, want, atol=2e-3)
        assert np.abs(want - np.median(want)).mean() > 10  # lines, not a flat grey


def test_map_equals_the_detector(first_device: gpucore.Device,
                                 generators: tuple[Any, Any, Path],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The uint8 maps within one level of LineartDetector's (its resize to 64s off: the
    extension's own pad-to-64 is the registry's processor_res step)."""
    fine, coarse, folder = generators
    monkeypatch.setenv(annotator_file.ENV_VAR, str(folder))
    monkeypatch.setattr(reference, "resize_image", lambda image, resolution: image)
    detector = reference.LineartDetector(fine, coarse)
    image = _picture(4)
    maps = {}
    for module, coarse_flag in (("lineart_realistic", False), ("lineart_coarse", True)):
        want = detector(image, coarse=coarse_flag, output_type="np")
        maps[module] = got = preprocess(module, image, device=first_device)
        assert got.shape == want.shape == (37, 45, 3)
        assert np.abs(got.astype(int) - want).max() <= 1
    assert np.abs(maps["lineart_realistic"].astype(int) - maps["lineart_coarse"]).mean() > 5


def test_registered_with_the_extensions_slider() -> None:
    for module in ("lineart_realistic", "lineart_coarse"):
        assert [s["name"] for s in module_detail()[module]["sliders"]] == ["Resolution"]


@pytest.mark.nodevice
def test_missing_file_names_it_and_the_folder(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(annotator_file.ENV_VAR, str(tmp_path))
    with pytest.raises(WeightsError) as caught:
        preprocess("lineart_coarse", np.zeros((8, 8, 3), np.uint8))
    message = str(caught.value)
    assert "\n" not in message
    assert "sk_model2.pth" in message and str(tmp_path / "lineart") in message
