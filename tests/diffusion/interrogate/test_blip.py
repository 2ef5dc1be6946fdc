"""BLIP's captioner on gpustd against transformers' BlipForConditionalGeneration on the same tiny
random weights, read from the WebUI's file layout (Salesforce's keys in
model_base_caption_capfilt_large.pth, bert's vocab.txt): the image embeddings and the decoder's
logits to float32 error, greedy and beam-search captions token for token; the errors naming
what to add."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")
pytest.importorskip("transformers", reason="test-only reference (extra: reference)")

from blip_ref import (  # noqa: E402
    IMAGE_SIZE,
    SPECIAL,
    reference_caption,
    reference_pixels,
    tiny_blip,
    write_blip,
    write_vocab,
)
from PIL import Image  # noqa: E402

import gpucore  # noqa: E402
from diffusion.interrogate import BlipCaptioner, InterrogateModelError  # noqa: E402
from diffusion.interrogate.blip import check_blip_options  # noqa: E402

pytestmark = pytest.mark.skipif(not gpucore.devices(), reason="no GPU adapter present")
SEP = SPECIAL.index("[SEP]")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, BlipCaptioner]:
    folder = tmp_path_factory.mktemp("BLIP")
    model = tiny_blip()
    write_blip(folder, model)
    return model, folder, BlipCaptioner(folder, image_size=IMAGE_SIZE)


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (37, 45, 3), dtype=np.uint8))


def test_captions_match_transformers(setup: tuple[Any, Path, BlipCaptioner]) -> None:
    model, folder, blip = setup
    got = {}
    for seed, beams in ((2, 1), (2, 3), (3, 1)):
        picture = _picture(seed)
        options = {"interrogate_clip_num_beams": beams, "interrogate_clip_min_length": 6,
                   "interrogate_clip_max_length": 14}
        ids, text = reference_caption(model, folder, picture, beams=beams, min_length=6,
                                      max_length=14)
        assert blip.token_ids(picture, options) == ids
        assert blip.caption(picture, options) == text
        got[seed, beams] = ids
    # beam search matters, the picture matters, and captions end at [SEP] or at max_length
    assert got[2, 1] != got[2, 3] and got[2, 1][4:] != got[3, 1][4:]
    assert got[2, 3][-1] == SEP and len(got[2, 3]) < 14 and len(got[2, 1]) == 14
    assert len(got[3, 1]) >= 6


def test_embeddings_and_logits_match_transformers(
        setup: tuple[Any, Path, BlipCaptioner]) -> None:
    model, folder, blip = setup
    picture = _picture(5)
    ids, _ = reference_caption(model, folder, picture, beams=1, min_length=10, max_length=14)
    network = blip.load()[0]
    pixels = reference_pixels(picture)
    np.testing.assert_allclose(blip.pixels(picture), pixels.numpy(), atol=1e-5)
    with torch.no_grad():
        want = model(pixels, input_ids=torch.tensor([ids]))
    embeds = network.visual_encoder(pixels.numpy())
    np.testing.assert_allclose(embeds.numpy(), want.image_embeds.numpy(), atol=2e-4, rtol=1e-4)
    decoder = network.text_decoder
    logits = want.logits[0].numpy()
    # all tokens at once (causal), and one at a time after the prompt (the cache)
    whole = decoder.logits(decoder.hidden_states(decoder.start(embeds, 1), np.asarray([ids])))
    np.testing.assert_allclose(whole.numpy()[0], logits, atol=2e-3, rtol=1e-4)
    cache = decoder.start(embeds, 1)
    steps = [decoder.step(cache, np.asarray([ids[:4]]))[0]]
    steps += [decoder.step(cache, np.asarray([[token]]))[0] for token in ids[4:-1]]
    np.testing.assert_allclose(np.stack(steps), logits[3:-1], atol=2e-3, rtol=1e-4)
    assert np.ptp(logits[-1]) > 10  # far from a flat distribution


def test_other_sizes_interpolate_the_position_embeddings(
        setup: tuple[Any, Path, BlipCaptioner]) -> None:
    """A file made for 64x64 pictures captions 80x80 ones (the WebUI: 384x384 always), its
    4x4 position embeddings resized to 5x5 bicubically, as BLIP's loader and transformers'
    interpolate_pos_encoding do."""
    model, folder, _ = setup
    blip = BlipCaptioner(folder, image_size=80)
    picture = _picture(2)
    pixels = reference_pixels(picture, 80)
    with torch.no_grad():
        want = model.vision_model(pixels, interpolate_pos_encoding=True).last_hidden_state
    got = blip.load()[0].visual_encoder(pixels.numpy()).numpy()
    assert got.shape == (1, 26, 128)
    np.testing.assert_allclose(got, want.numpy(), atol=2e-4, rtol=1e-4)
    ids, _ = reference_caption(model, folder, picture, beams=1, min_length=6, max_length=14,
                               size=80)
    options = {"interrogate_clip_min_length": 6, "interrogate_clip_max_length": 14}
    assert blip.token_ids(picture, options) == ids


def test_a_vocab_of_another_size_is_refused(setup: tuple[Any, Path, BlipCaptioner],
                                            tmp_path: Path) -> None:
    folder = setup[1]
    shutil.copy(folder / "model_base_caption_capfilt_large.pth", tmp_path)
    lines = (folder / "vocab.txt").read_text().splitlines()
    (tmp_path / "vocab.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(InterrogateModelError, match=rf"make {len(lines) + 1} tokens, the file's "
                                                    rf"decoder reads {len(lines) + 2}"):
        BlipCaptioner(tmp_path).load()


def test_missing_files_name_what_to_add(tmp_path: Path) -> None:
    where = re.escape(f"no BLIP captioner (.pth) in {tmp_path}")
    with pytest.raises(InterrogateModelError, match=where):
        BlipCaptioner(tmp_path).check()
    with pytest.raises(InterrogateModelError, match=r"\(no BLIP folder given\)"):
        BlipCaptioner(None).check()
    torch.save({"model": {"visual_encoder.cls_token": torch.zeros(1, 1, 64)}},
               tmp_path / "other.pth")
    with pytest.raises(InterrogateModelError, match=r"no vocab\.txt in"):
        BlipCaptioner(tmp_path).check()
    write_vocab(tmp_path)
    with pytest.raises(InterrogateModelError, match="not a BLIP captioning state dict"):
        BlipCaptioner(tmp_path).load()


def test_options_are_checked() -> None:
    assert check_blip_options({"interrogate_clip_num_beams": 4.0, "x": 1}) == {
        "interrogate_clip_num_beams": 4}
    with pytest.raises(ValueError, match="interrogate_clip_max_length must be a whole number "
                                         "from 1 to 256"):
        check_blip_options({"interrogate_clip_max_length": 300})
    with pytest.raises(ValueError, match="interrogate_clip_min_length"):
        check_blip_options({"interrogate_clip_min_length": 2.5})
