"""The CLIP interrogator on gpustd against transformers' CLIPModel on the same tiny random
weights: the WebUI's ranking (softmax of 100 x image-text similarity, top N per list) and its
text; the 422-style errors naming what to add."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")
pytest.importorskip("transformers", reason="test-only reference (extra: reference)")

from clip_interrogate_ref import TERMS, reference_ranks, write_clip_model, write_terms  # noqa: E402
from PIL import Image  # noqa: E402

import gpucore  # noqa: E402
from diffusion.interrogate import (  # noqa: E402
    ClipInterrogator,
    InterrogateModelError,
    check_clip_options,
)

pytestmark = pytest.mark.skipif(not gpucore.devices(), reason="no GPU adapter present")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, ClipInterrogator]:
    root = tmp_path_factory.mktemp("clip")
    model = write_clip_model(root / "CLIP")
    write_terms(root / "interrogate")
    return model, ClipInterrogator(root / "CLIP", root / "interrogate")


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (37, 45, 3), dtype=np.uint8))


def test_ranking_matches_transformers(setup: tuple[Any, ClipInterrogator]) -> None:
    model, clip = setup
    answers = set()
    for seed in (1, 2):
        picture = _picture(seed)
        got, want = clip.ranks(picture, {}), reference_ranks(model, picture)
        assert [term for term, _ in got] == [term for term, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=0.5)
        answers.add(tuple(term for term, _ in got))
    assert len(answers) > 1  # the picture matters
    probs = [score for _, score in got]
    assert max(probs) > 40  # the text matters: far from a flat softmax
    text = clip.caption(picture, {})
    assert text == ", ".join(term for term, _ in want)
    ranked = clip.caption(picture, {"interrogate_return_ranks": True})
    assert ranked.startswith(f"({want[0][0]}:{want[0][1] / 100:.3f}), (")
    skipped = clip.caption(picture, {"interrogate_clip_skip_categories": ["artists"],
                                     "interrogate_clip_dict_limit": 2})
    assert skipped.split(", ")[0] in TERMS["flavors.top3"][:2]
    assert len(skipped.split(", ")) == 3


def test_missing_files_name_what_to_add(tmp_path: Path) -> None:
    with pytest.raises(InterrogateModelError, match="no transformers CLIPModel"):
        ClipInterrogator(tmp_path, tmp_path).check()
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(InterrogateModelError, match=r"no term lists \(\*.txt\) in"):
        ClipInterrogator(tmp_path, tmp_path / "none").check()


def test_options_are_checked() -> None:
    body = {"interrogate_clip_dict_limit": 20.0, "interrogate_clip_skip_categories": ["a"]}
    assert check_clip_options(body) == {"interrogate_clip_dict_limit": 20,
                                        "interrogate_clip_skip_categories": ["a"]}
    with pytest.raises(ValueError, match="interrogate_clip_dict_limit must be a whole number"):
        check_clip_options({"interrogate_clip_dict_limit": -1})
    with pytest.raises(ValueError, match="interrogate_clip_skip_categories must be a list"):
        check_clip_options({"interrogate_clip_skip_categories": "artists"})
