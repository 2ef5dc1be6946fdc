"""lineart_realistic / lineart_coarse / lineart_anime against controlnet_aux's LineartDetector
and LineartAnimeDetector on the same random generators, saved as the annotator files
(sk_model.pth, sk_model2.pth, netG.pth) with torch.save."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is a test-only reference "
                                        "(extra: reference)")
torch = pytest.importorskip("torch", reason="torch is a test-only reference (extra: reference)")
from controlnet_aux_ref import controlnet_aux, write_lineart_anime  # noqa: E402
from sd_tiny import randomized  # noqa: E402

import gpucore  # noqa: E402
from diffusion.loaders.control import annotator_file  # noqa: E402
from diffusion.loaders.errors import WeightsError  # noqa: E402
from diffusion.preprocessors import lineart, lineart_anime, module_detail, preprocess  # noqa: E402
from diffusion.preprocessors.lineart import lineart_lines  # noqa: E402
from diffusion.preprocessors.lineart_anime import lineart_anime_lines  # noqa: E402
from diffusion.preprocessors.resize import resize  # noqa: E402

reference = controlnet_aux("lineart")
anime = controlnet_aux("lineart_anime")


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


def _picture(seed: int, height: int = 21, width: int = 27) -> np.ndarray:
    """Random blobs: sides that are not multiples of the generator's stride of 4."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def test_maps_equal_the_detector(first_device: gpucore.Device,
                                 generators: tuple[Any, Any, Path],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Each module once: its float lines before rounding (taken on their way through) equal
    the generator's output (24x28 for 21x27) resized as cv2.INTER_LINEAR, times 255; its uint8
    map is within one level of LineartDetector's (its resize to 64s off: the extension's own
    pad-to-64 is the registry's processor_res step); the picture and the file matter."""
    fine, coarse, folder = generators
    monkeypatch.setenv(annotator_file.ENV_VAR, str(folder))
    monkeypatch.setattr(reference, "resize_image", lambda image, resolution: image)
    lines: list[np.ndarray] = []
    monkeypatch.setattr(lineart, "lineart_lines", lambda image, module, *, device=None: (
        lines.append(lineart_lines(image, module, device=device)) or lines[-1]))
    detector = reference.LineartDetector(fine, coarse)
    image = _picture(3)
    maps = {}
    for module, model in (("lineart_realistic", fine), ("lineart_coarse", coarse)):
        with torch.no_grad():
            out = model(torch.from_numpy(image.transpose(2, 0, 1)[None] / 255.0).float())
        assert out.shape[2:] == (24, 28)
        want = cv2.resize(out[0, 0].numpy(), (27, 21), interpolation=cv2.INTER_LINEAR) * 255
        maps[module] = got = preprocess(module, image, device=first_device)
        np.testing.assert_allclose(lines[-1], want, atol=2e-3)
        assert np.abs(want - np.median(want)).mean() > 10  # lines, not a flat grey
        want_map = detector(image, coarse=model is coarse, output_type="np")
        assert got.shape == want_map.shape == (21, 27, 3)
        assert np.abs(got.astype(int) - want_map).max() <= 1
        for _ in range(2 if model is fine else 0):  # recorded, then replayed
            np.testing.assert_array_equal(preprocess(module, image, device=first_device), got)
    assert np.abs(maps["lineart_realistic"].astype(int) - maps["lineart_coarse"]).mean() > 5


def test_registered_with_the_extensions_slider() -> None:
    for module in ("lineart_realistic", "lineart_coarse", "lineart_anime"):
        assert [s["name"] for s in module_detail()[module]["sliders"]] == ["Resolution"]


@pytest.fixture(scope="module")
def anime_network(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    folder = tmp_path_factory.mktemp("annotators")
    return write_lineart_anime(folder), folder


def test_lineart_anime_equals_the_detector(first_device: gpucore.Device,
                                           anime_network: tuple[Any, Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """21x27 enlarged to 256x256 and back. The detector's uint8 enlargement is resize.resize
    here (cv2's INTER_CUBIC within one level: test_control_resize), so that the network sees
    the same picture; its float resizes stay OpenCV's. The lines before rounding (taken on
    their way through) to float32 error, the uint8 maps within one level."""
    network, folder = anime_network
    monkeypatch.setenv(annotator_file.ENV_VAR, str(folder))
    monkeypatch.setattr(anime, "resize_image", lambda image, resolution: image)

    def cv2_resize(image: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
        if image.dtype == np.uint8 and interpolation == cv2.INTER_CUBIC:
            return resize(image, size, "cubic")
        return cv2.resize(image, size, interpolation=interpolation)

    monkeypatch.setattr(anime, "cv2", types.SimpleNamespace(resize=cv2_resize,
                                                            INTER_CUBIC=cv2.INTER_CUBIC,
                                                            INTER_LINEAR=cv2.INTER_LINEAR))
    detector = anime.LineartAnimeDetector(network)
    image = _picture(5)
    with torch.no_grad():
        enlarged = resize(image, (256, 256), "cubic").transpose(2, 0, 1)[None] / 127.5 - 1.0
        out = detector.model(torch.from_numpy(enlarged).float())[0, 0] * 127.5 + 127.5
    want = cv2.resize(out.numpy(), (27, 21), interpolation=cv2.INTER_CUBIC)
    lines: list[np.ndarray] = []
    monkeypatch.setattr(lineart_anime, "lineart_anime_lines", lambda image, *, device=None: (
        lines.append(lineart_anime_lines(image, device=device)) or lines[-1]))
    got = preprocess("lineart_anime", image, device=first_device)
    np.testing.assert_allclose(lines[0], want, atol=2e-3)
    assert want.std() > 10  # the picture matters
    want_map = detector(image, output_type="np")
    assert got.shape == want_map.shape == (21, 27, 3)
    assert np.abs(got.astype(int) - want_map).max() <= 1


@pytest.mark.nodevice
def test_missing_file_names_it_and_the_folder(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(annotator_file.ENV_VAR, str(tmp_path))
    with pytest.raises(WeightsError) as caught:
        preprocess("lineart_coarse", np.zeros((8, 8, 3), np.uint8))
    message = str(caught.value)
    assert "\n" not in message
    assert "sk_model2.pth" in message and str(tmp_path / "lineart") in message
