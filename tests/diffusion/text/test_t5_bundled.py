"""The bundled T5 v1.1 tokenizer (single-file FLUX / SD3 checkpoints come without one) against
transformers' T5TokenizerFast reading google/t5-v1_1-xxl's own tokenizer.json.

That file is not in the tree (2.4 MB); the test writes it back from the bundled vocabulary in
the layout `tokenizers` saves, and its SHA-256 must be the original's (data/LICENSE-t5.txt): so
the reference reads the real file, byte for byte, and no code of ours builds its pipeline."""

from __future__ import annotations

import gzip
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion.text.t5_tokenizer import T5Tokenizer

transformers = pytest.importorskip("transformers", reason="transformers is a test-only reference")

pytestmark = pytest.mark.nodevice

ORIGINAL_SHA256 = "fe2ebbbbde2985be723e0ce18217853e4020c5e9d35bd07be2c27ab9d3ead57a"


def _special(token_id: int, content: str) -> dict[str, Any]:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": True}


def _original_tokenizer_json(bundle: dict[str, Any]) -> bytes:
    """google/t5-v1_1-xxl's tokenizer.json as `tokenizers` 0.x wrote it (serde's pretty
    printer: 2-space indent, shortest float repr, UTF-8 unescaped)."""
    sentinels = [f"<extra_id_{99 - i}>" for i in range(100)]
    sequence = [{"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}}]
    metaspace = {"type": "Metaspace", "replacement": "▁", "add_prefix_space": True}
    document = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [_special(0, "<pad>"), _special(1, "</s>"), _special(2, "<unk>"),
                         *(_special(32000 + i, s) for i, s in enumerate(sentinels))],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Precompiled", "precompiled_charsmap": bundle["precompiled_charsmap"]},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "TemplateProcessing", "single": sequence,
            "pair": [*sequence, {"Sequence": {"id": "B", "type_id": 0}}, sequence[1]],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}},
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": 2, "vocab": [
            *([p, float(np.float32(s))] for p, s in zip(bundle["pieces"], bundle["scores"])),
            *([s, 0.0] for s in sentinels)]},
    }
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = resources.files("diffusion").joinpath("data/t5_vocab.json.gz").read_bytes()
    text = _original_tokenizer_json(json.loads(gzip.decompress(data)))
    assert hashlib.sha256(text).hexdigest() == ORIGINAL_SHA256
    file = tmp_path_factory.mktemp("t5") / "tokenizer.json"
    file.write_bytes(text)
    return transformers.T5TokenizerFast(tokenizer_file=str(file))


@pytest.fixture(scope="module")
def ours() -> T5Tokenizer:
    return T5Tokenizer(max_length=77)


def _expected(reference: Any, prompts: list[str], length: int) -> np.ndarray:
    return np.array(reference(prompts, padding="max_length", max_length=length,
                              truncation=True).input_ids)


PROMPTS = [
    "a photo of an astronaut riding a horse on mars, 8k, highly detailed",
    # the WebUI's weighting syntax, left in (FLUX / SD3 prompts are plain text here)
    "(masterpiece:1.2), [[best quality]], {cat|dog}, <lora:foo:0.8> AND sunset",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ ① ﬁ ǅ ㍿ Ⅻ", "tab\there\nnewline\r\n  double   spaces ",
    "", " ", "  leading", "trailing  ", "日本語のプロンプト 中文 한국어 Ελληνικά русский",
    "emoji 😀🎉 ☃ \u200b zero width \u00a0nbsp \u3000 ideographic \u200d joiner",
    "Ünïcödé ñ ß Œ ç e\u0301 composed", "<extra_id_0> sentinel <pad> </s> <unk> literal",
    "C:\\path\\file.png, https://example.com/a?b=c#d", "1,234.56 $7 50% 3x4 2024-11-24",
    "x" * 300, "word " * 200,
]


def test_bundled_equals_t5_v1_1(reference: Any, ours: T5Tokenizer) -> None:
    np.testing.assert_array_equal(ours(PROMPTS), _expected(reference, PROMPTS, 77))
    # FLUX dev's length: a long prompt is cut with </s> kept last
    long = ["a very long prompt about many things, " * 80]
    got = ours(long, max_length=512)
    np.testing.assert_array_equal(got, _expected(reference, long, 512))
    assert got[0, -1] == 1 and got.shape == (1, 512)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=60), min_size=1, max_size=3))
def test_bundled_on_any_text(reference: Any, ours: T5Tokenizer, prompts: list[str]) -> None:
    np.testing.assert_array_equal(ours(prompts), _expected(reference, prompts, 77))


def test_bundled_ids_and_length_check(ours: T5Tokenizer) -> None:
    ids = ours("a cat", max_length=8).tolist()[0]
    end = ids.index(1)  # the pieces, </s>, then <pad>s
    assert 0 not in ids[:end] and set(ids[end + 1:]) == {0}
    with pytest.raises(ValueError, match="max_length"):
        T5Tokenizer(max_length=0)


def test_bundled_is_compact() -> None:
    size = resources.files("diffusion").joinpath("data/t5_vocab.json.gz")
    assert len(size.read_bytes()) < 512 * 1024
    assert Path(str(size)).with_name("LICENSE-t5.txt").is_file()
