"""shuffle against the extension's ContentShuffleDetector (annotator.util.make_noise_disk and
cv2.remap, as controlnet_aux keeps them) on numpy's global generator seeded as the extension
seeds it."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is a test-only reference "
                                        "(extra: reference)")
pytest.importorskip("torch", reason="controlnet_aux's util imports torch (extra: reference)")
from controlnet_aux_ref import controlnet_aux  # noqa: E402

from diffusion.pipelines.control_spec import numpy_seed  # noqa: E402
from diffusion.preprocessors import module_detail, preprocess  # noqa: E402
from diffusion.preprocessors.resize import resize_with_pad  # noqa: E402
from diffusion.preprocessors.shuffle import cubic_weights, shuffle  # noqa: E402

util = controlnet_aux("util")
pytestmark = pytest.mark.nodevice


def _picture(height: int, width: int, seed: int) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize("height, width, seed", [(77, 301, 5), (515, 260, 7)])
def test_shuffle_equals_the_detector(height: int, width: int, seed: int) -> None:
    """Sizes below and above the noise's 256-pixel cells, odd ones."""
    picture = _picture(height, width, seed)
    np.random.seed(seed)
    x = util.make_noise_disk(height, width, 1, 256) * float(width - 1)
    y = util.make_noise_disk(height, width, 1, 256) * float(height - 1)
    want = cv2.remap(picture, np.concatenate([x, y], axis=2).astype(np.float32), None,
                     cv2.INTER_LINEAR)
    got = shuffle(picture, seed=seed)
    assert (want != picture).mean() > 0.5
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(shuffle(picture, seed=seed + 1), want)


def test_bicubic_weights_equal_opencvs() -> None:
    rng = np.random.default_rng(0)
    cells = rng.random((4, 5))
    want = cv2.resize(cells, (1061, 1024), interpolation=cv2.INTER_CUBIC)
    got = cubic_weights(4, 1024) @ cells @ cubic_weights(5, 1061).T
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)


def test_shuffle_through_the_registry() -> None:
    """At 512 whatever processor_res asks (the extension's hidden slider), the seed the
    extension's set_numpy_seed makes of seed and subseed."""
    picture = _picture(300, 200, 3)
    seed = numpy_seed(4000000000, 500000000)
    assert seed == (4500000000 & 0xFFFFFFFF) and numpy_seed(7, -1) == 14
    assert numpy_seed(-1, 3) is None
    got = preprocess("shuffle", picture, resolution=64, seed=seed)
    padded, remove_pad = resize_with_pad(picture, 512)
    assert got.shape == (768, 512, 3)
    np.testing.assert_array_equal(got, shuffle(remove_pad(padded), seed=seed))
    assert module_detail()["shuffle"]["sliders"] == []
