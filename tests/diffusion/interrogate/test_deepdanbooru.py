"""DeepDanbooru on gpustd against the WebUI's own DeepDanbooruModel (typed in
tests/deepdanbooru_ref.py) on the same random weights, read from the .pt the WebUI loads; its
tag text against the WebUI's tag_multi formatting."""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")

from deepdanbooru_ref import random_deepdanbooru, webui_tag_text, write_pt  # noqa: E402

from diffusion.interrogate import (  # noqa: E402
    DEEPBOORU_OPTIONS,
    DeepBooru,
    InterrogateModelError,
    check_options,
    format_tags,
)
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


@pytest.mark.nodevice
@pytest.mark.parametrize("options", [
    {},
    {"deepbooru_sort_alpha": False, "deepbooru_use_spaces": False},
    {"deepbooru_escape": False, "interrogate_return_ranks": True,
     "interrogate_deepbooru_score_threshold": 0.3},
    {"deepbooru_filter_tags": "long hair, smile_(happy)", "deepbooru_sort_alpha": False},
])
def test_tag_text_is_the_webuis(options):
    tags = ["smile_(happy)", "1girl", "long_hair", "rating:safe", "a\\b", "zebra", "cat_ears",
            "blue_sky", "solo"]
    scores = np.random.default_rng(4).random(len(tags)).astype(np.float32)
    scores[0], scores[3] = 0.9, 0.99
    want = webui_tag_text(tags, list(scores), {**DEEPBOORU_OPTIONS, **options})
    assert format_tags(tags, scores, options) == want
    assert ("smile" in want) == ("smile" not in options.get("deepbooru_filter_tags", ""))


@pytest.mark.nodevice
def test_the_file_is_found_or_its_folder_named(tmp_path):
    with pytest.raises(InterrogateModelError, match="no models folder given"):
        DeepBooru(None).file()
    with pytest.raises(InterrogateModelError, match=re.escape(
            f"no .pt file in {tmp_path}; put the WebUI's model-resnet_custom_v3.pt there")):
        DeepBooru(tmp_path).file()
    for name in ("a.pt", "model-resnet_custom_v3.pt", "z.pt"):
        (tmp_path / name).write_bytes(b"")
    assert DeepBooru(tmp_path).file().name == "model-resnet_custom_v3.pt"
    (tmp_path / "model-resnet_custom_v3.pt").unlink()
    assert DeepBooru(tmp_path).file().name == "a.pt"
    with pytest.raises(InterrogateModelError, match=re.escape(str(tmp_path / "a.pt"))):
        DeepBooru(tmp_path).model()


@pytest.mark.nodevice
def test_options_are_checked():
    assert check_options({"deepbooru_escape": False, "sd_vae": "x"}) == {
        "deepbooru_escape": False}
    for bad, says in [({"deepbooru_escape": 1}, "deepbooru_escape must be true or false"),
                      ({"interrogate_deepbooru_score_threshold": 2}, "from 0 to 1, got 2"),
                      ({"deepbooru_filter_tags": ["a"]}, "deepbooru_filter_tags must be text")]:
        with pytest.raises(ValueError, match=says):
            check_options(bad)
