"""softedge_hed / softedge_hedsafe (and PiDiNet's) against controlnet_aux's HEDdetector and
PidiNetDetector on the same random networks, saved as the annotator files with torch.save."""

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
from diffusion.preprocessors import preprocess, softedge  # noqa: E402

hed = controlnet_aux("hed")
pidi = controlnet_aux("pidi")


def _picture(seed: int, height: int = 21, width: int = 27) -> np.ndarray:
    """Random blobs; sides that no pooling stride divides."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def hed_network(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    folder = tmp_path_factory.mktemp("annotators")
    (folder / "hed").mkdir()
    network = randomized(hed.ControlNetHED_Apache2(), 5, scale=0.15)
    with torch.no_grad():
        network.norm.copy_(torch.tensor([120.0, 110.0, 100.0]).reshape(1, 3, 1, 1))
    torch.save(network.state_dict(), folder / "hed" / "ControlNetHED.pth")
    return network, folder


def _taken_on_the_way(monkeypatch: pytest.MonkeyPatch, name: str) -> list[np.ndarray]:
    """What softedge.`name` returns while preprocess runs (the float map before rounding)."""
    taken: list[np.ndarray] = []
    unrounded = getattr(softedge, name)
    monkeypatch.setattr(softedge, name, lambda image, *, device=None: (
        taken.append(unrounded(image, device=device)) or taken[-1]))
    return taken


def test_hed_equals_the_detector(first_device: gpucore.Device, hed_network: tuple[Any, Path],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Before rounding: the side outputs resized by cv2, averaged, through a sigmoid; the
    uint8 maps within one level of HEDdetector's (safe and not; its resize to 64s off)."""
    network, folder = hed_network
    monkeypatch.setenv(annotator_file.ENV_VAR, str(folder))
    monkeypatch.setattr(hed, "resize_image", lambda image, resolution: image)
    edges = _taken_on_the_way(monkeypatch, "hed_edges")
    detector = hed.HEDdetector(network)
    image = _picture(1)
    with torch.no_grad():
        sides = network(torch.from_numpy(image.transpose(2, 0, 1)[None].copy()).float())
    resized = [cv2.resize(s[0, 0].numpy(), (27, 21), interpolation=cv2.INTER_LINEAR)
               for s in sides]
    want = 1 / (1 + np.exp(-np.mean(np.stack(resized, axis=2), axis=2).astype(np.float64)))
    for module, safe in (("softedge_hed", False), ("softedge_hedsafe", True)):
        got = preprocess(module, image, device=first_device)
        np.testing.assert_allclose(edges[-1], want, atol=1e-5)
        want_map = detector(image, safe=safe, output_type="np")
        assert got.shape == want_map.shape == (21, 27, 3)
        assert np.abs(got.astype(int) - want_map).max() <= 1, module
    assert want.std() > 0.05  # the picture matters
    assert len(np.unique(got)) <= 3  # safe: 0, 127, 255


@pytest.fixture(scope="module")
def pidinet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """table5_pidinet.pth as released: {"state_dict": ...} under DataParallel's `module.`."""
    folder = tmp_path_factory.mktemp("annotators")
    (folder / "pidinet").mkdir()
    network = randomized(pidi.pidinet(), 3, scale=0.22)
    state = {f"module.{key}": value for key, value in network.state_dict().items()}
    torch.save({"epoch": 19, "state_dict": state}, folder / "pidinet" / "table5_pidinet.pth")
    return folder


def test_pidinet_matches_the_detector(first_device: gpucore.Device, pidinet_folder: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The file read by PidiNetDetector.from_pretrained and by ours: the fused edges before
    rounding to float32 error, the uint8 maps (safe and not) within one level."""
    monkeypatch.setenv(annotator_file.ENV_VAR, str(pidinet_folder))
    monkeypatch.setattr(pidi, "resize_image", lambda image, resolution: image)
    detector = pidi.PidiNetDetector.from_pretrained(str(pidinet_folder / "pidinet"))
    image = _picture(3)
    with torch.no_grad():
        bgr = image[:, :, ::-1].transpose(2, 0, 1)[None] / 255.0
        want = detector.netNetwork(torch.from_numpy(bgr.copy()).float())[-1][0, 0].numpy()
    assert want.std() > 0.05  # the picture matters
    edges = _taken_on_the_way(monkeypatch, "pidinet_edges")
    for module, safe in (("softedge_pidinet", False), ("softedge_pidisafe", True)):
        want_map = detector(image, safe=safe, output_type="np")
        got = preprocess(module, image, device=first_device)
        np.testing.assert_allclose(edges[-1], want, atol=2e-6)
        assert got.shape == want_map.shape == (21, 27, 3)
        assert np.abs(got.astype(int) - want_map).max() <= 1, module


@pytest.mark.nodevice
def test_missing_files_name_themselves_and_the_folder(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(annotator_file.ENV_VAR, str(tmp_path))
    for module, file, sub in (("softedge_hedsafe", "ControlNetHED.pth", "hed"),
                              ("softedge_pidinet", "table5_pidinet.pth", "pidinet")):
        with pytest.raises(WeightsError) as caught:
            preprocess(module, np.zeros((8, 8, 3), np.uint8))
        assert file in str(caught.value) and str(tmp_path / sub) in str(caught.value)


def test_a_file_of_another_network_is_named(first_device: gpucore.Device, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A lineart generator saved as ControlNetHED.pth: one line naming the file and what it
    lacks."""
    (tmp_path / "hed").mkdir()
    lineart = controlnet_aux("lineart").Generator(3, 1, 3)
    torch.save(lineart.state_dict(), tmp_path / "hed" / "ControlNetHED.pth")
    monkeypatch.setenv(annotator_file.ENV_VAR, str(tmp_path))
    with pytest.raises(WeightsError) as caught:
        preprocess("softedge_hed", np.zeros((16, 16, 3), np.uint8), device=first_device)
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "hed" / "ControlNetHED.pth"))
    assert "not a ControlNetHED_Apache2 network" in message and "\n" not in message
