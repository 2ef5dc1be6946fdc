"""Textual inversion: the database against the WebUI's rules, the text encoder's vector
substitution against transformers' CLIP, and whole prompts against diffusers'
`load_textual_inversion` on a tiny pipeline (torch CPU references, random weights)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from safetensors.numpy import save_file
from sd_tiny import state_dict, tiny_text_encoder, write_pipeline
from support import assert_close

from diffusion.loaders import WeightsError
from diffusion.models import CLIPTextModel
from diffusion.text.conditioning import encode, prompt_chunks
from diffusion.text.embeddings import EmbeddingDatabase, ti_hashes
from diffusion.text.tokenizer import CLIPTokenizer

TOL = 1e-5  # relative: max |ours - ref| / max |ref|; f32 through 5 CLIP layers, measured <= 6e-7
WIDTH = 32  # the tiny CLIP's hidden size


def _vectors(seed: int, count: int, width: int = WIDTH) -> np.ndarray:
    """Random vectors on the scale of the tiny model's token embeddings."""
    return np.random.default_rng(seed).normal(0, 0.3, (count, width)).astype(np.float32)


def _save(path, tensors) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer()


@pytest.fixture(scope="module")
def reference():
    return tiny_text_encoder()


def _ours(reference, device) -> CLIPTextModel:
    model = CLIPTextModel(reference.config.to_dict(), device=device)
    model.load_state_dict(state_dict(reference, strip="text_model."))
    return model


# -- the text encoder ------------------------------------------------------------------------


def _reference_hidden(reference, ids, fixes, clip_skip):
    """transformers' CLIP with the token embeddings replaced by hand at the fixes' positions
    (a forward hook on its token embedding: the WebUI's EmbeddingsWithFixes)."""

    def substitute(module, args, output):
        output = output.clone()
        for row, row_fixes in enumerate(fixes):
            for position, vectors in row_fixes:
                count = min(len(vectors), output.shape[1] - position)
                output[row, position:position + count] = torch.from_numpy(vectors[:count])
        return output

    embedding = reference.embeddings.token_embedding
    handle = embedding.register_forward_hook(substitute)
    try:
        with torch.no_grad():
            out = reference(torch.from_numpy(ids.astype(np.int64)), output_hidden_states=True)
    finally:
        handle.remove()
    hidden = out.hidden_states[-1 - clip_skip]
    with torch.no_grad():
        return reference.final_layer_norm(hidden).numpy()


def test_encoder_vectors_match_transformers(device, reference):
    ours = _ours(reference, device)
    ids = np.random.default_rng(0).integers(0, 49408, (3, 77)).astype(np.int32)
    fixes = [[(1, _vectors(1, 1)), (10, _vectors(2, 3))],
             [],  # a row without embeddings beside rows with them
             [(75, _vectors(3, 3))]]  # runs past the end: the last vector is dropped
    for clip_skip in (0, 1):
        expected = _reference_hidden(reference, ids, fixes, clip_skip)
        got = ours(ids, clip_skip=clip_skip, embeddings=fixes).numpy()
        assert_close(got, expected, tol=TOL)
    plain = _reference_hidden(reference, ids, [[], [], []], 1)
    assert not np.allclose(plain[0], got[0], atol=1e-3)  # the vectors do change the output


def test_encoder_vectors_float16(f16_device, reference):
    """The vectors are put in at the model's dtype (f16 storage, f32 accumulation)."""
    ours = CLIPTextModel(reference.config.to_dict(), dtype=np.float16, device=f16_device)
    ours.load_state_dict(state_dict(reference, strip="text_model."))
    ids = np.random.default_rng(4).integers(0, 49408, (1, 77)).astype(np.int32)
    fixes = [[(5, _vectors(5, 2))]]
    expected = _reference_hidden(reference, ids, fixes, 0)
    assert_close(ours(ids, embeddings=fixes).numpy(), expected, dtype=np.float16)


def test_encoder_embedding_errors(first_device, reference):
    ours = _ours(reference, first_device)
    ids = np.zeros((1, 77), np.int32)
    with pytest.raises(ValueError, match=r"must be \(n, 32\)"):
        ours(ids, embeddings=[[(1, _vectors(0, 2, width=24))]])
    with pytest.raises(ValueError, match="outside the 77 tokens"):
        ours(ids, embeddings=[[(77, _vectors(0, 1))]])
    with pytest.raises(ValueError, match="one list per batch row"):
        ours(ids, embeddings=[[], []])


# -- parity with diffusers' load_textual_inversion ---------------------------------------------


def test_prompts_match_diffusers(first_device, tmp_path, tokenizer):
    """Each format and vector count, in a prompt and a negative prompt, against diffusers.
    diffusers gives a 3-vector embedding the tokens name, name_1, name_2 in the prompt; ours
    puts 3 vectors where the name's tokens were: the same positions, so equal hidden states."""
    import diffusers

    folder = write_pipeline(tmp_path / "model")
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    ours = _ours(pipe.text_encoder, first_device)  # before diffusers grows its vocabulary
    directory = tmp_path / "embeddings"
    files = {  # name: (tensors as saved, vectors)
        "wuggle": ("webui", _vectors(10, 1)), "trazzle": ("webui", _vectors(11, 3)),
        "plonkish": ("diffusers", _vectors(12, 1)), "snerdo": ("diffusers", _vectors(13, 3)),
    }
    for name, (kind, vectors) in files.items():
        path = directory / ("sub" if kind == "diffusers" else "") / f"{name}.safetensors"
        # the WebUI saves {"emb_params": (n, D)}; diffusers {token: (D,) or (n, D)}
        key = "emb_params" if kind == "webui" else f"<{name}>"
        _save(path, {key: vectors[0] if len(vectors) == 1 and kind == "diffusers" else vectors})
        pipe.load_textual_inversion(str(path), token=name)
    lookup = EmbeddingDatabase(directory).lookup(tokenizer, width=WIDTH)
    cases = [("a photo of wuggle", "blurry, snerdo"),
             ("a photo of trazzle on a plonkish hill", "trazzle"),
             ("snerdo, wuggle and no embedding at all", "")]
    for prompt, negative in cases:
        expected, expected_negative = pipe.encode_prompt(
            prompt, "cpu", 1, True, negative_prompt=negative)
        got = encode(tokenizer, ours, prompt, steps=1, embeddings=lookup).array_at(0)[0]
        got_negative = encode(tokenizer, ours, negative, steps=1, extra_networks=False,
                              embeddings=lookup).array_at(0)[0]
        assert_close(got, expected[0].detach().numpy(), tol=TOL)
        assert_close(got_negative, expected_negative[0].detach().numpy(), tol=TOL)
    assert list(lookup.used) == ["wuggle", "snerdo", "trazzle", "plonkish"]


# -- the database ----------------------------------------------------------------------------


@pytest.mark.nodevice
def test_formats_and_names(tmp_path, tokenizer):
    """One tensor under any key, (D,) or (n, D); SDXL's clip_l/clip_g per encoder; names from
    file stems in subfolders; the longest name wins."""
    vectors = _vectors(0, 2)
    _save(tmp_path / "webui.safetensors", {"emb_params": vectors})
    _save(tmp_path / "a" / "b" / "flat.safetensors", {"string_to_param.*": vectors})
    _save(tmp_path / "single.safetensors", {"<single>": vectors[0]})
    _save(tmp_path / "red.safetensors", {"emb_params": vectors[:1]})
    _save(tmp_path / "red fox.safetensors", {"emb_params": vectors})
    clip_l, clip_g = _vectors(1, 2, 768), _vectors(2, 2, 1280)
    _save(tmp_path / "xl.safetensors", {"clip_l": clip_l, "clip_g": clip_g})
    (tmp_path / "notes.txt").write_text("not an embedding")
    database = EmbeddingDatabase(tmp_path)
    assert database.names == ["flat", "red", "red fox", "single", "webui", "xl"]
    lookup = database.lookup(tokenizer, width=WIDTH)
    chunk, = prompt_chunks(tokenizer, "Webui, FLAT single red fox, red", embeddings=lookup)
    found = {e.name: (at, e.vectors) for at, e in chunk.embeddings}
    assert {name: (at, len(v)) for name, (at, v) in found.items()} == {
        "webui": (1, 2), "flat": (4, 2), "single": (6, 1), "red fox": (7, 2), "red": (10, 1)}
    np.testing.assert_array_equal(found["flat"][1], vectors)
    np.testing.assert_array_equal(found["single"][1], vectors[:1])
    for encoder, width, expected in (("clip_l", 768, clip_l), ("clip_g", 1280, clip_g)):
        xl = database.lookup(tokenizer, width=width, encoder=encoder)
        (_, embedding), = prompt_chunks(tokenizer, "xl", embeddings=xl)[0].embeddings
        np.testing.assert_array_equal(embedding.vectors, expected)


@pytest.mark.nodevice
def test_unknown_name_stays_text(tmp_path, tokenizer):
    _save(tmp_path / "wuggle.safetensors", {"emb_params": _vectors(0, 1)})
    lookup = EmbeddingDatabase(tmp_path).lookup(tokenizer, width=WIDTH)
    text = "a wuggles and trazzle, wug"
    assert prompt_chunks(tokenizer, text, embeddings=lookup) == prompt_chunks(tokenizer, text)
    assert lookup.used == {}


@pytest.mark.nodevice
def test_bad_pickles_refused_when_used(tmp_path, tokenizer):
    (tmp_path / "evil.pt").write_bytes(b"cos\nsystem\n(S'touch ran'\ntR.")
    (tmp_path / "old.bin").write_bytes(b"\x80\x04 not loaded")
    (tmp_path / "both.pt").write_bytes(b"\x80\x04 not loaded")
    _save(tmp_path / "both.safetensors", {"emb_params": _vectors(0, 1)})
    lookup = EmbeddingDatabase(tmp_path).lookup(tokenizer, width=WIDTH)
    prompt_chunks(tokenizer, "a harmless prompt", embeddings=lookup)
    (_, embedding), = prompt_chunks(tokenizer, "both", embeddings=lookup)[0].embeddings
    assert embedding.file.path.suffix == ".safetensors"  # preferred to the pickle of that name
    for name, message in (("evil", r"evil\.pt: refusing to load: its pickle calls "
                                     r"'(os|posix)\.system'"),
                          ("old", r"old\.bin: not a valid PyTorch file")):
        with pytest.raises(WeightsError, match=message):
            prompt_chunks(tokenizer, f"a {name} cat", embeddings=lookup)
    assert not (tmp_path / "ran").exists()


def test_wrong_width_names_the_file(first_device, tmp_path, tokenizer, reference):
    _save(tmp_path / "sd2.safetensors", {"emb_params": _vectors(0, 2, 1024)})
    _save(tmp_path / "xl.safetensors", {"clip_l": _vectors(1, 1, 768),
                                        "clip_g": _vectors(2, 1, 1280)})
    database = EmbeddingDatabase(tmp_path)
    lookup = database.lookup(tokenizer, width=WIDTH)
    with pytest.raises(WeightsError, match=r"sd2\.safetensors: embedding 'sd2' has 1024-wide "
                                           r"vectors.*takes 32-wide vectors"):
        encode(tokenizer, _ours(reference, first_device), "a sd2 cat", steps=1,
               embeddings=lookup)
    with pytest.raises(WeightsError, match=r"xl\.safetensors.*is for SDXL"):
        prompt_chunks(tokenizer, "xl", embeddings=lookup)
    xl_lookup = database.lookup(tokenizer, width=1280, encoder="clip_g")
    with pytest.raises(WeightsError, match=r"sd2\.safetensors.*one text encoder \(1024-wide "
                                           r"vectors, SD 2\.x\)"):
        prompt_chunks(tokenizer, "sd2", embeddings=xl_lookup)
    with pytest.raises(WeightsError, match=r"xl\.safetensors.*1280-wide vectors \(clip_g\)"):
        prompt_chunks(tokenizer, "xl", embeddings=database.lookup(tokenizer, width=768,
                                                                   encoder="clip_g"))


@pytest.mark.nodevice
def test_malformed_files(tmp_path, tokenizer):
    """Each is an error naming the file when its name is used, and only then (read lazily)."""
    _save(tmp_path / "two.safetensors", {"a": _vectors(0, 1), "b": _vectors(1, 1)})
    _save(tmp_path / "ints.safetensors", {"emb_params": np.ones((2, WIDTH), np.int32)})
    _save(tmp_path / "long.safetensors", {"emb_params": _vectors(0, 76)})
    _save(tmp_path / "uneven.safetensors", {"clip_l": _vectors(1, 1, 768),
                                            "clip_g": _vectors(2, 2, 1280)})
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    for name in ("one", "two"):
        _save(tmp_path / name / "twin.safetensors", {"emb_params": _vectors(0, 1)})
    (tmp_path / "empty.safetensors").write_bytes(b"")  # skipped, as the WebUI skips it
    (tmp_path / "dangling.pt").symlink_to(tmp_path / "gone.pt")  # skipped: nothing to read
    database = EmbeddingDatabase(tmp_path)
    assert "empty" not in database.names and "dangling" not in database.names
    lookup = database.lookup(tokenizer, width=WIDTH)
    prompt_chunks(tokenizer, "a cat", embeddings=lookup)  # nothing read, nothing wrong
    cases = {"two": r"two\.safetensors: not a textual-inversion embedding.*\['a', 'b'\]",
             "ints": r"ints\.safetensors: tensor 'emb_params' is I32",
             "long": r"long\.safetensors: 76 vectors do not fit",
             "broken": r"broken\.safetensors: not a valid safetensors file",
             "twin": r"'twin' matches several files.*one.*two"}
    for name, message in cases.items():
        with pytest.raises(WeightsError, match=message):
            prompt_chunks(tokenizer, f"a {name} cat", embeddings=lookup)
    with pytest.raises(WeightsError, match=r"uneven\.safetensors: clip_l and clip_g hold"):
        prompt_chunks(tokenizer, "uneven",
                      embeddings=database.lookup(tokenizer, width=768, encoder="clip_l"))
    with pytest.raises(FileNotFoundError, match=r"embeddings directory .*missing"):
        EmbeddingDatabase(tmp_path / "missing")
    with pytest.raises(ValueError, match="encoder must be None or one of"):
        database.lookup(tokenizer, width=WIDTH, encoder="clip_h")


@pytest.mark.nodevice
def test_hashes_and_rescan(tmp_path, tokenizer):
    """TI hashes: the first 12 hex digits of the file's sha256, ':' and ',' dropped from the
    name, earlier encodes' value appended (the WebUI's sd_hijack_clip); new files are seen by
    the next lookup."""
    _save(tmp_path / "neg:a,b.safetensors", {"emb_params": _vectors(0, 1)})
    database = EmbeddingDatabase(tmp_path)
    _save(tmp_path / "late.safetensors", {"emb_params": _vectors(1, 1)})
    lookup = database.lookup(tokenizer, width=WIDTH)
    prompt_chunks(tokenizer, "late, neg:a,b", embeddings=lookup, emphasis="None")
    digest = {path.stem: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
              for path in tmp_path.iterdir()}
    assert ti_hashes(lookup.used.values(), "x: 0123") == (
        f"late: {digest['late']}, negab: {digest['neg:a,b']}, x: 0123")
    assert ti_hashes([]) == ""
