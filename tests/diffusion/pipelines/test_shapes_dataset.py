"""The shapes data set of the bundled model: determinism, captions, held-out combinations, the
measuring code the model tests rely on, and the reduced tokenizer. Needs no device."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tools import shapes

pytestmark = pytest.mark.nodevice  # host logic: `pytest -m nodevice`

PLAIN = re.compile(r"a (\w+) (\w+) on a (\w+) background")
FULL = re.compile(r"a (small|large) (\w+) (\w+) at the (\w+) on a (\w+) background")


def test_dataset_is_a_function_of_its_seed():
    first = list(shapes.dataset(7, 20))
    again = list(shapes.dataset(7, 20))
    other = list(shapes.dataset(8, 20))
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, again))
    assert any(a[1] != b[1] for a, b in zip(first, other))
    tail = list(shapes.dataset(7, 5, start=15))
    assert [t[1] for t in tail] == [f[1] for f in first[15:]]
    assert first[0][0].shape == (128, 128, 3) and first[0][0].dtype == np.uint8


def test_captions_follow_the_templates():
    templates = set()
    for _, text, spec in shapes.dataset(3, 300):
        full, plain = FULL.fullmatch(text), PLAIN.fullmatch(text)
        assert full or plain, text
        templates.add("full" if full else "plain")
        assert spec.background != spec.colour
        assert shapes.parse(text)["colour"] == spec.colour
    assert templates == {"full", "plain"}
    spec = shapes.Spec("red", "circle", "blue", "left", "small")
    assert shapes.caption(spec, "plain") == "a red circle on a blue background"
    assert shapes.caption(spec) == "a small red circle at the left on a blue background"


def test_held_out_combinations_never_train():
    seen = {(spec.colour, spec.shape) for *_, spec in shapes.dataset(4, 1000)}
    assert not seen & set(shapes.HELD_OUT)
    assert {c for c, _ in seen} == set(shapes.COLOURS) and {s for _, s in seen} == set(
        shapes.SHAPES)
    held = {(spec.colour, spec.shape) for *_, spec in shapes.dataset(4, 50, held_out=True)}
    assert held <= set(shapes.HELD_OUT)


def test_measure_reads_the_drawn_pictures_back():
    items = list(shapes.dataset(5, 400))
    agree = sum(shapes.agrees(spec, shapes.measure(image)) for image, _, spec in items)
    assert agree >= 0.99 * len(items)
    assert all(shapes.agrees(text, shapes.measure(image)) for image, text, _ in items[:50])


def test_measure_survives_blur():
    from PIL import Image, ImageFilter

    items = list(shapes.dataset(6, 100))
    blurred = [np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(2)))
               for im, _, _ in items]
    agree = sum(shapes.agrees(spec, shapes.measure(im)) for im, (_, _, spec) in zip(blurred, items))
    assert agree >= 0.97 * len(items)


def test_reduced_tokenizer_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from diffusion.text.tokenizer import CLIPTokenizer

    vocab = shapes.tokenizer_files(tmp_path)
    assert len(vocab) < 1000
    ours = CLIPTokenizer.from_pretrained(tmp_path)
    theirs = transformers.CLIPTokenizer(str(tmp_path / "vocab.json"),
                                        str(tmp_path / "merges.txt"), model_max_length=77)
    texts = [text for _, text, _ in shapes.dataset(9, 100)]
    texts += ["a red star on a blue background", "", "Zebras, 42 photos of DOGS!", "café au lait"]
    expected = np.array(theirs(texts, padding="max_length", truncation=True,
                               max_length=77).input_ids)
    assert np.array_equal(ours(texts), expected)
    assert (ours.bos_token_id, ours.eos_token_id) == (theirs.bos_token_id, theirs.eos_token_id)
    # our words are whole tokens, as in full CLIP
    full = CLIPTokenizer()
    for word in shapes.WORDS:
        assert len(ours.encode(word)) == len(full.encode(word))
