"""DeepDanbooru on gpustd against the WebUI's own DeepDanbooruModel (typed in
tests/deepdanbooru_ref.py) on the same random weights, read from the .pt the WebUI loads."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")

from deepdanbooru_ref import random_deepdanbooru, write_pt  # noqa: E402

from diffusion.loaders.formats.torch_file import TorchFile  # noqa: E402
from diffusion.models.deepdanbooru import DeepDanbooru  # noqa: E402
from gpustd import Tensor  # noqa: E402

TAGS = [f"tag_{i}" for i in range(10)]


@pytest.fixture(scope="module")
def reference():
    return random_deepdanbooru(TAGS)


def test_scores_equal_the_webui_port(first_device, reference, tmp_path):
    file = TorchFile(write_pt(reference, tmp_path / "model-resnet_custom_v3.pt"))
    model = DeepDanbooru.from_state_dict({k: file.read(k) for k in file.keys()},
                                         file.objects["tags"], device=first_device)
    assert model.tags == TAGS
    rng = np.random.default_rng(3)
    pixels = rng.random((1, 128, 128, 3), dtype=np.float32)
    with torch.no_grad():
        want = reference(torch.from_numpy(pixels))[0].numpy()
        darker = reference(torch.from_numpy(pixels * 0.5))[0].numpy()
    assert np.abs(want - darker).max() > 0.05  # the picture matters, not only the biases
    assert 0.001 < want.min() and want.max() < 0.999  # no score saturated
    got = model(Tensor.from_numpy(pixels, device=first_device)).numpy()
    np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.nodevice
def test_other_files_are_refused(reference):
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    with pytest.raises(ValueError, match=r"n_Conv_7\.weight"):
        DeepDanbooru.from_state_dict({k: v for k, v in state.items() if "n_Conv_7." not in k},
                                     TAGS)
    with pytest.raises(ValueError, match="9 tag names for 10 scores"):
        DeepDanbooru.from_state_dict(state, TAGS[:9])
