"""CLIP tokenizer against transformers' CLIPTokenizer built from the same vocabulary (no hub)."""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion.text.tokenizer import CLIPTokenizer, bundled_vocab

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.nodevice  # host logic: `pytest -m nodevice`

PROMPTS = [
    "a photo of a cat",
    "A Photo Of A CAT, highly detailed; 8k, (masterpiece:1.2), [bad-hands]!!!",
    "it's what they'd've done, isn't it? I'm sure we'll",
    "3.14159 x 2048 = 6433.98, 1st/2nd #42 $100 50% 1e-4",
    "Café naïve résumé, Ångström, São Paulo, Straße",
    "cafe\u0301 (decomposed accent) vs café",
    "emoji 😀🎉👩‍👩‍👧 and ✨ sparkles ❤️",
    "日本語のテキスト, 中文, 한국어, русский текст, ελληνικά, עברית, العربية",
    "   leading and trailing   \t tabs\n\nnewlines\r\n  ",
    "",
    " ",
    "hello<|endoftext|>world <|startoftext|> again",
    "snake_case kebab-case CamelCase http://example.com/a?b=c&d=e user@mail.org",
    "a " * 100,  # 100 words: truncated to 75 tokens
    "supercalifragilisticexpialidocious antidisestablishmentarianism " * 8,
    "\u00a0non-breaking\u2003em space\u200bzero width",
]


def _write_vocab(folder: Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")


def _openai_clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary as OpenAI's clip/simple_tokenizer.py builds it, independently of ours."""
    gz = resources.files("diffusion").joinpath("data/bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.decompress(gz.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    vocab = [chr(c) for c in cs]
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {v: i for i, v in enumerate(vocab)}, merges


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clip") / "tokenizer"
    _write_vocab(folder, *_openai_clip_vocab())
    return folder


@pytest.fixture(scope="module")
def reference(files: Path):
    return transformers.CLIPTokenizer(str(files / "vocab.json"), str(files / "merges.txt"),
                                      model_max_length=77)


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer()


def _reference_ids(reference, prompts, max_length=77):
    return reference(prompts, padding="max_length", truncation=True, max_length=max_length,
                     return_tensors="np").input_ids


def test_bundled_vocab_is_clips():
    vocab, merges = bundled_vocab()
    assert len(vocab) == 49408 and len(merges) == 48894
    assert (vocab, merges) == _openai_clip_vocab()
    assert vocab["!"] == 0 and vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    # the example in transformers' CLIP documentation
    assert CLIPTokenizer().encode("a photo of a cat") == [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.mark.parametrize("prompt", PROMPTS, ids=range(len(PROMPTS)))
def test_matches_transformers(prompt, tokenizer, reference):
    assert tokenizer.encode(prompt) == reference(prompt).input_ids
    got = tokenizer([prompt])
    assert got.dtype == np.int32 and got.shape == (1, 77)
    np.testing.assert_array_equal(got, _reference_ids(reference, [prompt]))


def test_batch_truncation_and_padding(tokenizer, reference):
    got = tokenizer(PROMPTS)
    np.testing.assert_array_equal(got, _reference_ids(reference, PROMPTS))
    long = tokenizer("a " * 100)[0]
    assert long[0] == 49406 and long[-1] == 49407 and (long[1:-1] == 320).all()
    short = tokenizer("a photo")[0]
    assert list(short[:4]) == [49406, 320, 1125, 49407] and (short[4:] == 49407).all()
    np.testing.assert_array_equal(tokenizer(PROMPTS[:3], max_length=12),
                                  _reference_ids(reference, PROMPTS[:3], max_length=12))
    longest = tokenizer(["a photo of a cat", "a dog"], padding=False)
    np.testing.assert_array_equal(longest, reference(["a photo of a cat", "a dog"],
                                                     padding="longest",
                                                     return_tensors="np").input_ids)


@settings(max_examples=15, deadline=None)
@given(st.text(max_size=120))
def test_random_text_matches_transformers(tokenizer, reference, text):
    assert tokenizer.encode(text) == reference(text).input_ids


def test_sd2_folder_pads_with_its_pad_token(files, tmp_path):
    model = tmp_path / "sd2"
    _write_vocab(model / "tokenizer", *_openai_clip_vocab())
    (model / "tokenizer" / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": {"content": "<|startoftext|>", "normalized": True},
        "eos_token": "<|endoftext|>", "pad_token": "!", "unk_token": "<|endoftext|>"}))
    (model / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 77, "pad_token": "<|endoftext|>", "do_lower_case": True}))
    ours = CLIPTokenizer.from_pretrained(model)  # the model root: tokenizer/ is found
    reference = transformers.CLIPTokenizer(str(files / "vocab.json"), str(files / "merges.txt"),
                                           model_max_length=77, pad_token="!")
    assert ours.pad_token_id == 0
    np.testing.assert_array_equal(ours(PROMPTS), _reference_ids(reference, PROMPTS))
    # only the pad token in the folder: the bundled vocabulary, still SD2 padding
    only_map = tmp_path / "map_only"
    only_map.mkdir()
    (only_map / "special_tokens_map.json").write_text(json.dumps({"pad_token": "!"}))
    assert CLIPTokenizer.from_pretrained(only_map)("hi")[0, -1] == 0


def test_folder_vocabulary_is_used(tmp_path):
    # a tiny vocabulary unlike CLIP's: ids of everything differ from the bundled ones
    bytes_chars = list(_openai_clip_vocab()[0])[:256]
    merges = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>")]
    tokens = ["<|startoftext|>", "<|endoftext|>", *bytes_chars,
              *(c + "</w>" for c in bytes_chars), *("".join(m) for m in merges)]
    _write_vocab(tmp_path, {t: i for i, t in enumerate(tokens)}, merges)
    ours = CLIPTokenizer.from_pretrained(tmp_path)
    reference = transformers.CLIPTokenizer(str(tmp_path / "vocab.json"),
                                           str(tmp_path / "merges.txt"), model_max_length=77)
    prompts = ["cat dog", "a Cat, DOG! catdog", ""]
    assert ours.vocab_size == len(tokens) and ours.bos_token_id == 0 and ours.eos_token_id == 1
    assert ours.encode("cat dog") == [0, len(tokens) - 3, len(tokens) - 1, 1]
    np.testing.assert_array_equal(ours(prompts), _reference_ids(reference, prompts))


def test_decode_round_trip(tokenizer):
    assert tokenizer.decode(tokenizer.encode("Hello, world")) == "hello , world"
    assert tokenizer.decode(tokenizer("a photo of a cat")[0]) == "a photo of a cat"


def test_errors(tokenizer, tmp_path):
    with pytest.raises(TypeError, match="prompt must be a str"):
        tokenizer.encode(42)
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        tokenizer("x", max_length=1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CLIPTokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="pad_token='<pad>' must be in it"):
        CLIPTokenizer(pad_token="<pad>")


def test_a_folder_loaded_again_reuses_its_build_until_its_files_change(tmp_path):
    """Tokenizers are built once per vocabulary (a pipeline loads its folder's every time):
    the same files give the same build, changed files (at the same path) a new one."""
    bytes_chars = list(_openai_clip_vocab()[0])[:256]
    tokens = ["<|startoftext|>", "<|endoftext|>", *bytes_chars,
              *(c + "</w>" for c in bytes_chars)]

    def write(merges: list[tuple[str, str]]) -> None:
        _write_vocab(tmp_path, {t: i for i, t in enumerate(
            [*tokens, *("".join(m) for m in merges)])}, merges)

    write([("c", "a"), ("ca", "t</w>")])
    first = CLIPTokenizer.from_pretrained(tmp_path)
    assert first.encode("cat") == [0, len(tokens) + 1, 1]
    assert CLIPTokenizer.from_pretrained(tmp_path)._tokenizer is first._tokenizer
    write([("d", "o"), ("do", "g</w>")])
    again = CLIPTokenizer.from_pretrained(tmp_path)
    assert again.encode("dog") == [0, len(tokens) + 1, 1]
    assert again.encode("cat") != first.encode("cat")
