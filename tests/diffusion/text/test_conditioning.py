"""Weighted, chunked conditioning against a direct computation with transformers' CLIP (torch
CPU) on the tiny random text encoder: token ids per chunk built here from the WebUI's rules
(with transformers' tokenizer), each chunk through transformers, emphasis and mean restoring
in torch, chunks concatenated."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from sd_tiny import state_dict, tiny_text_encoder, write_tokenizer
from support import assert_close

import gpucore
from diffusion.models import CLIPTextModel
from diffusion.pipelines.sd.stable_diffusion import StableDiffusion
from diffusion.text.conditioning import encode, encode_texts, prompt_chunks
from diffusion.text.tokenizer import CLIPTokenizer

TOL = 1e-5  # relative: max |ours - ref| / max |ref|; f32 through 5 layers, measured <= 6e-7
BOS, EOS, COMMA = 49406, 49407, 267
WORD = 2653  # "word": one token
BREAK = None  # a chunk boundary in the reference's token stream


@pytest.fixture
def first_device(device: gpucore.Device) -> gpucore.Device:
    """`device` for its first adapter only: these check the WebUI's semantics; the parity tests
    above them run on every adapter."""
    from conftest import ADAPTERS

    if device.info.index != ADAPTERS[0].index:
        pytest.skip("semantics are checked on the first adapter; parity runs on every adapter")
    return device


@pytest.fixture(scope="module")
def reference_model():
    return tiny_text_encoder()


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    import transformers

    folder = tmp_path_factory.mktemp("clip")
    write_tokenizer(folder)
    return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                      model_max_length=77)


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer()


@pytest.fixture(scope="module")
def encoders(reference_model):
    """Our CLIPTextModel per device, loaded with the reference's weights once."""
    built: dict[str, CLIPTextModel] = {}

    def get(device: gpucore.Device) -> CLIPTextModel:
        key = f"{device.backend}{device.name}"
        if key not in built:
            built[key] = CLIPTextModel(reference_model.config.to_dict(), device=device)
            built[key].load_state_dict(state_dict(reference_model, strip="text_model."))
        return built[key]

    return get


def _stream(hf_tokenizer, pieces):
    """(token, weight) per token of literal (text, weight) pieces; BREAK for a boundary."""
    out = []
    for piece in pieces:
        if piece is BREAK:
            out.append(BREAK)
            continue
        text, weight = piece
        out += [(t, weight) for t in hf_tokenizer(text, add_special_tokens=False).input_ids]
    return out


def _reference_chunks(stream, pad=EOS):
    """The WebUI's chunking, written from its description: 75 tokens a chunk; when a chunk is
    full and the next token is not a comma, break after the chunk's last comma if it is among
    the last 20 tokens; BREAK ends a chunk; BOS ... EOS around each, EOS padding (SD 2: `pad`
    after the first EOS)."""
    chunks, current = [], []
    for item in stream:
        if item is BREAK:
            chunks.append(current)
            current = []
            continue
        if len(current) == 75:
            commas = [i for i, (t, _) in enumerate(current) if t == COMMA]
            if item[0] != COMMA and commas and commas[-1] >= 75 - 20:
                chunks.append(current[:commas[-1] + 1])
                current = current[commas[-1] + 1:]
            else:
                chunks.append(current)
                current = []
        current.append(item)
    if current or not chunks:
        chunks.append(current)
    ids, weights = [], []
    for chunk in chunks:
        body = [t for t, _ in chunk]
        ids.append([BOS, *body, EOS] + [pad] * (75 - len(body)))
        weights.append([1.0, *(w for _, w in chunk)] + [1.0] * (76 - len(chunk)))
    return ids, weights


def _reference_encode(model, rows, clip_skip=0, emphasis=True):
    """rows: [(ids, weights) per text], padded here with empty chunks to the same count; the
    WebUI's forward: per chunk index, one batch over the texts, mean restored over the batch."""
    count = max(len(ids) for ids, _ in rows)
    empty = [BOS] + [EOS] * 76, [1.0] * 77
    out = []
    for i in range(count):
        ids = torch.tensor([r[0][i] if i < len(r[0]) else empty[0] for r in rows])
        weights = torch.tensor([r[1][i] if i < len(r[1]) else empty[1] for r in rows],
                               dtype=torch.float32)
        with torch.no_grad():
            result = model(ids, output_hidden_states=True)
            z = result.last_hidden_state
            if clip_skip:
                final_norm = getattr(model, "text_model", model).final_layer_norm
                z = final_norm(result.hidden_states[-1 - clip_skip])
        if emphasis:
            mean = z.mean()
            z = z * weights[:, :, None]
            z = z * (mean / z.mean())
        out.append(z)
    return torch.cat(out, dim=1).numpy()


def _words(n):
    return " ".join(["word"] * n)


CASES = {
    "plain": ("a photo of a cat", [("a photo of a cat", 1.0)]),
    "emphasis": ("a (red:1.3) fox, [blurry] ((snow)) (unclosed",
                 [("a ", 1.0), ("red", 1.3), (" fox, ", 1.0), ("blurry", 1 / 1.1), (" ", 1.0),
                  ("snow", 1.1 * 1.1), (" ", 1.0), ("unclosed", 1.1)]),
    # 100 tokens, no comma: 75 + 25
    "long": (_words(100), [(_words(100), 1.0)]),
    # a comma 10 tokens before the end of the first chunk: that chunk ends at the comma
    "long comma": (_words(65) + ", (" + _words(30) + ":0.8)",
                   [(_words(65) + ", ", 1.0), (_words(30), 0.8)]),
    # a comma 25 tokens back: too far, the chunk is cut at 75
    "long far comma": (_words(50) + ", " + _words(40), [(_words(50) + ", " + _words(40), 1.0)]),
    "break": ("a cat BREAK a (dog)", [("a cat", 1.0), BREAK, ("a ", 1.0), ("dog", 1.1)]),
    "empty": ("", []),
}


def _check_case(device, case, tokenizer, hf_tokenizer, reference_model, encoders):
    prompt, pieces = CASES[case]
    ids, weights = _reference_chunks(_stream(hf_tokenizer, pieces))
    expected = _reference_encode(reference_model, [(ids, weights)])
    schedule = encode(tokenizer, encoders(device), prompt, steps=20)
    got = schedule.at(0).numpy()
    assert got.shape == expected.shape == (1, 77 * len(ids), 32)
    assert_close(got, expected, tol=TOL)
    assert schedule.length == 77 * len(ids) and schedule.change_steps == []
    chunks = prompt_chunks(tokenizer, prompt)
    assert [list(c.tokens) for c in chunks] == ids
    np.testing.assert_allclose([c.weights for c in chunks], weights, rtol=1e-15)


@pytest.mark.parametrize("case", ["plain", "emphasis", "long comma", "break"])
def test_matches_transformers(device, case, tokenizer, hf_tokenizer, reference_model, encoders):
    _check_case(device, case, tokenizer, hf_tokenizer, reference_model, encoders)


@pytest.mark.parametrize("case", ["long", "long far comma", "empty"])
def test_chunking_matches_transformers(first_device, case, tokenizer, hf_tokenizer,
                                       reference_model, encoders):
    _check_case(first_device, case, tokenizer, hf_tokenizer, reference_model, encoders)


@pytest.mark.nodevice
def test_chunk_boundaries(tokenizer):
    # the rules stated as literal positions, independent of the reference above
    lengths = [len([t for t in c.tokens[1:] if t != EOS]) for c in
               prompt_chunks(tokenizer, _words(65) + ", " + _words(30))]
    assert lengths == [66, 30]  # 65 words and the comma, then the rest
    lengths = [len([t for t in c.tokens[1:] if t != EOS]) for c in
               prompt_chunks(tokenizer, _words(50) + ", " + _words(40))]
    assert lengths == [75, 16]
    off = prompt_chunks(tokenizer, _words(65) + ", " + _words(30), comma_padding_backtrack=0)
    assert len(off) == 2 and off[0].tokens[75] == WORD
    assert [len(c.tokens) for c in prompt_chunks(tokenizer, "BREAK x BREAK BREAK")] == [77] * 3
    assert prompt_chunks(tokenizer, _words(75))[0].tokens[-1] == EOS
    assert len(prompt_chunks(tokenizer, _words(75))) == 1
    assert len(prompt_chunks(tokenizer, _words(76))) == 2
    assert prompt_chunks(tokenizer, "a (red:1.3) fox")[0].describe(tokenizer) == [
        ("a", 1.0), ("red", 1.3), ("fox", 1.0)]


def test_plain_prompt_equals_encode_prompt(first_device, tokenizer, encoders):
    # the old path (truncating tokenizer + encoder) must be unchanged by the new one
    model = encoders(first_device)
    pipe = StableDiffusion(tokenizer=tokenizer, text_encoder=model, unet=None, vae=None,
                           scheduler_config={})
    for prompt in ("a photo of a cat", ""):
        old = pipe.encode_prompt([prompt]).numpy()
        new = encode(tokenizer, model, prompt, steps=10).array_at(0)
        np.testing.assert_array_equal(new, old)


def test_clip_skip(device, tokenizer, hf_tokenizer, reference_model, encoders):
    prompt, pieces = CASES["emphasis"]
    ids, weights = _reference_chunks(_stream(hf_tokenizer, pieces))
    expected = _reference_encode(reference_model, [(ids, weights)], clip_skip=1)
    got = encode(tokenizer, encoders(device), prompt, steps=20, clip_skip=1).at(0).numpy()
    assert_close(got, expected, tol=TOL)


def test_sd2_padding(first_device, hf_tokenizer, reference_model, encoders):
    sd2 = CLIPTokenizer(pad_token="!")
    prompt, pieces = CASES["break"]
    ids, weights = _reference_chunks(_stream(hf_tokenizer, pieces), pad=0)
    assert [list(c.tokens) for c in prompt_chunks(sd2, prompt)] == ids
    expected = _reference_encode(reference_model, [(ids, weights)])
    assert_close(encode(sd2, encoders(first_device), prompt, steps=5).array_at(0), expected,
                 tol=TOL)


def test_schedule_and_batch(first_device, tokenizer, hf_tokenizer, reference_model, encoders):
    model = encoders(first_device)
    # prompt editing: both texts encoded in one batch, the short one padded with an empty
    # chunk, emphasis means taken over the batch (the WebUI's get_learned_conditioning)
    prompt = "[(cat:1.5) " + _words(80) + ":dog:3]"
    cat = _reference_chunks(_stream(hf_tokenizer, [("cat", 1.5), (" " + _words(80), 1.0)]))
    dog = _reference_chunks(_stream(hf_tokenizer, [("dog", 1.0)]))
    both = _reference_encode(reference_model, [cat, dog])
    schedule = encode(tokenizer, model, [prompt, "a dog"], steps=10)
    assert schedule.change_steps == [3] and schedule.length == 154
    for step, row in ((0, 0), (3, 0), (4, 1), (9, 1)):
        got = schedule.array_at(step)
        assert got.shape == (2, 154, 32)
        assert_close(got[0], both[row], tol=TOL)
    # the one-chunk item is padded by repeating its last vector (the WebUI's stack_conds)
    single = _reference_encode(reference_model, [_reference_chunks(
        _stream(hf_tokenizer, [("a dog", 1.0)]))])[0]
    got = schedule.array_at(0)[1]
    assert_close(got[:77], single, tol=TOL)
    np.testing.assert_array_equal(got[77:], np.repeat(got[76:77], 77, 0))
    assert schedule.at(1) is schedule.at(2)  # uploaded once per distinct value


def test_and_parts_are_rows_of_their_own(first_device, tokenizer, hf_tokenizer,
                                          reference_model, encoders):
    """The WebUI's get_multicond_learned_conditioning: each AND part encoded as a prompt of
    its own (its schedule's texts one batch), one row per part, image by image, all rows
    padded to the longest by their last vector; the negative prompt is one text."""
    model = encoders(first_device)
    prompt = "a [cat:dog:3] AND (fox:1.2) BREAK snow:-0.5"
    cat, dog = (_reference_chunks(_stream(hf_tokenizer, [(text, 1.0)]))
                for text in ("a cat", "a dog"))
    animals = _reference_encode(reference_model, [cat, dog])
    fox = _reference_encode(reference_model, [_reference_chunks(_stream(
        hf_tokenizer, [(" ", 1.0), ("fox", 1.2), BREAK, ("snow", 1.0)]))])[0]
    schedule = encode(tokenizer, model, [prompt, prompt], steps=10)
    assert schedule.weights == ((1.0, -0.5), (1.0, -0.5)) and schedule.composable
    assert schedule.change_steps == [3] and schedule.length == 154
    for step, animal in ((3, 0), (4, 1)):
        got = schedule.array_at(step)
        assert got.shape == (4, 154, 32)
        for row in (0, 2):
            assert_close(got[row, :77], animals[animal], tol=TOL)
            np.testing.assert_array_equal(got[row, 77:], np.repeat(got[row, 76:77], 77, 0))
        for row in (1, 3):
            assert_close(got[row], fox, tol=TOL)
    negative = encode(tokenizer, model, [prompt], steps=10, extra_networks=False,
                      composable=False)
    assert negative.weights == ((1.0,),) and not negative.composable
    assert negative.array_at(0).shape[0] == 1


def test_alternation_weights_means_by_use(first_device, tokenizer, hf_tokenizer,
                                           reference_model, encoders):
    # [(fe:1.4)|||]male: "female" at 3 of 10 steps, "male" at 7; the WebUI's batch has all 10
    rows = [_reference_chunks(_stream(hf_tokenizer, [("fe", 1.4), ("male", 1.0)]))] * 3
    rows += [_reference_chunks(_stream(hf_tokenizer, [("male", 1.0)]))] * 7
    expected = _reference_encode(reference_model, rows)
    texts = ["female" if s % 4 == 1 else "male" for s in range(1, 11)]
    texts = ["(fe:1.4)male" if t == "female" else t for t in texts]
    got = encode_texts(tokenizer, encoders(first_device), texts)
    assert_close(got[0], expected[0], tol=TOL)
    assert_close(got[1], expected[3], tol=TOL)
    schedule = encode(tokenizer, encoders(first_device), "[(fe:1.4)|||]male", steps=10)
    assert_close(schedule.array_at(0)[0], expected[0], tol=TOL)
    assert_close(schedule.array_at(2)[0], expected[3], tol=TOL)


def test_emphasis_modes(first_device, tokenizer, hf_tokenizer, reference_model, encoders):
    model = encoders(first_device)
    prompt = "a (red:1.3) fox"
    plain = _reference_chunks(_stream(hf_tokenizer, [("a red fox", 1.0)]))
    ignored = _reference_encode(reference_model, [plain], emphasis=False)
    assert_close(encode(tokenizer, model, prompt, steps=1, emphasis="Ignore").array_at(0),
                 ignored, tol=TOL)
    weighted = _reference_chunks(_stream(hf_tokenizer, [("a ", 1.0), ("red", 1.3),
                                                        (" fox", 1.0)]))
    raw = _reference_encode(reference_model, [weighted], emphasis=False)
    w = np.array(weighted[1], np.float32)[:, :, None]
    assert_close(encode(tokenizer, model, prompt, steps=1, emphasis="No norm").array_at(0),
                 raw * w, tol=TOL)
    literal = _reference_chunks(_stream(hf_tokenizer, [(prompt, 1.0)]))
    assert_close(encode(tokenizer, model, prompt, steps=1, emphasis="None").array_at(0),
                 _reference_encode(reference_model, [literal], emphasis=False), tol=TOL)


@pytest.mark.nodevice
def test_tokenize_matches_transformers(tokenizer, hf_tokenizer):
    texts = ["a (red:1.3) fox, [blurry]", "", "Café 😀 <|endoftext|> x"]
    assert tokenizer.tokenize(texts) == hf_tokenizer(texts, truncation=False,
                                                     add_special_tokens=False).input_ids
    assert tokenizer.token_id(",</w>") == COMMA and tokenizer.token_id("no such") is None


def test_errors(first_device, tokenizer, encoders):
    model = encoders(first_device)
    with pytest.raises(ValueError, match="emphasis must be one of"):
        encode(tokenizer, model, "x", steps=1, emphasis="Loud")
    with pytest.raises(ValueError, match="prompts is empty"):
        encode(tokenizer, model, [], steps=1)
    with pytest.raises(ValueError, match="comma_padding_backtrack must be"):
        prompt_chunks(tokenizer, "x", comma_padding_backtrack=80)
    with pytest.raises(ValueError, match="step must be a non-negative integer"):
        encode(tokenizer, model, "x", steps=1).at(-1)


class _Embedding:
    def __init__(self, name_ids, count):
        self.name_ids, self.vectors = name_ids, np.arange(count * 32.0).reshape(count, 32)


class _Lookup:
    """A textual-inversion database of one embedding (the WebUI's find_embedding_at_position)."""

    def __init__(self, embedding):
        self.embedding = embedding

    def find(self, tokens, position):
        ids = self.embedding.name_ids
        if list(tokens[position:position + len(ids)]) == ids:
            return self.embedding, len(ids)
        return None


class _RecordingEncoder:
    """Stands in for a text encoder that takes embeddings: records what it is given."""

    def __init__(self):
        self.calls = []

    def __call__(self, ids, *, clip_skip=0, **extra):
        self.calls.append((np.array(ids), extra))
        return type("Out", (), {"numpy": lambda _: np.ones((len(ids), 77, 32), np.float32),
                                "device": None, "dtype": np.dtype(np.float32)})()


@pytest.mark.nodevice
def test_embedding_placeholders(tokenizer):
    name_ids = tokenizer.tokenize(["fluffy"])[0]
    lookup = _Lookup(_Embedding(name_ids, 4))
    chunk, = prompt_chunks(tokenizer, "a (fluffy:1.2) cat", embeddings=lookup)
    cat = tokenizer.tokenize(["cat"])[0][0]
    assert chunk.tokens[:8] == (BOS, 320, 0, 0, 0, 0, cat, EOS)
    assert chunk.weights[:8] == (1.0, 1.0, 1.2, 1.2, 1.2, 1.2, 1.0, 1.0)
    assert chunk.embeddings == ((2, lookup.embedding),)
    # 73 words leave room for 2 of its 4 vectors: all 4 go to the next chunk
    first, second = prompt_chunks(tokenizer, _words(73) + " fluffy", embeddings=lookup)
    assert first.tokens[74:] == (EOS, EOS, EOS) and first.embeddings == ()
    assert second.tokens[:6] == (BOS, 0, 0, 0, 0, EOS) and second.embeddings[0][0] == 1
    # moved to the next chunk by the comma rule, the embedding goes with its placeholders
    first, second = prompt_chunks(tokenizer, _words(66) + ", fluffy" + " a" * 5,
                                  embeddings=lookup)
    assert first.embeddings == () and first.tokens[67:69] == (COMMA, EOS)
    assert second.tokens[:11] == (BOS, 0, 0, 0, 0, 320, 320, 320, 320, 320, EOS)
    assert second.embeddings == ((1, lookup.embedding),)
    encoder = _RecordingEncoder()
    encode_texts(tokenizer, encoder, ["a fluffy cat"], embeddings=lookup)
    (ids, extra), = encoder.calls
    assert ids.shape == (1, 77) and [(at, v.shape) for at, v in extra["embeddings"][0]] == [
        (2, (4, 32))]
    encode_texts(tokenizer, encoder, ["a cat"], embeddings=lookup)
    assert encoder.calls[-1][1] == {}  # no embedding used: the plain call
