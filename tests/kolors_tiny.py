"""Tiny random Kolors models built in-process with diffusers (torch CPU, seeded, nothing
downloaded): ChatGLM3's architecture at a tiny size, a SentencePiece BPE tokenizer.model, and
an SDXL-shaped UNet whose `encoder_hid_proj` (text_proj) takes ChatGLM's hidden states.

    model = chatglm(seed)                 # diffusers' ChatGLMModel, float32
    path = write_spm(folder)              # a BPE tokenizer.model (protobuf, no sentencepiece)
    ids = spm_encode(text)                # SentencePiece's BPE of it, written out by hand
    pipe = kolors_pipeline(scratch)       # diffusers' KolorsPipeline (its ChatGLMTokenizer)
    pictures = karras_euler(pipe, prompt, steps=3, ...)   # the WebUI's Euler + Karras there
    folder = kolors_folder(tmp_path_factory)   # that pipeline saved once per session
    pipe, folder.pipe                     # ... and the pipeline it was saved from

The sentencepiece library is not installed here, so `ChatGLMTokenizer` runs on `FakeSPM`: a
stand-in `SentencePieceProcessor` (installed as the `sentencepiece` module) that encodes with
`spm_encode`, SentencePiece's own BPE rule (merge the adjacent pair whose joined piece scores
highest, the leftmost of equals; characters outside the vocabulary as their UTF-8 bytes'
<0xXX> pieces), independent of the `tokenizers` BPE the package rebuilds.

The vocabulary is BPE-trained here on a few English and Chinese phrases (merges scored
-1, -2, ... in order, then the characters), after <unk> <s> </s> and the 256 byte pieces.

Weights: sd_tiny.randomized, with the UNet's encoder_hid_proj and cross-attention k/v scaled
up and ChatGLM's embeddings widened so the prompt visibly changes the picture (the tests
assert it).
"""

from __future__ import annotations

import itertools
import os
import sys
import types
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import sd_tiny
import sdxl_tiny

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CORPUS = ("a lighthouse at dusk, oil painting", "a cat sitting on the table",
          "the light of the sea at night", "一只猫坐在桌子上", "黄昏时的灯塔，油画",
          "painting of a cat and a lighthouse")
MERGES = 60
CHATGLM_TINY: dict[str, Any] = dict(
    num_layers=3, hidden_size=32, ffn_hidden_size=40, kv_channels=8, num_attention_heads=4,
    multi_query_attention=True, multi_query_group_num=2, add_qkv_bias=True,
    add_bias_linear=False, layernorm_epsilon=1e-5, rmsnorm=True, post_layer_norm=True,
    seq_length=512, original_rope=True, apply_query_key_layer_scaling=True,
    attention_softmax_in_fp32=True, torch_dtype="float32")
UNET_KOLORS_TINY: dict[str, Any] = {**sdxl_tiny.UNET_SDXL_TINY, "encoder_hid_dim": 32,
                                    "encoder_hid_dim_type": "text_proj"}
# Kwai-Kolors/Kolors-diffusers' scheduler_config.json: 1100 training steps, beta_end 0.014
SCHEDULER = dict(beta_start=0.00085, beta_end=0.014, beta_schedule="scaled_linear",
                 num_train_timesteps=1100, steps_offset=1, timestep_spacing="leading",
                 interpolation_type="linear", prediction_type="epsilon",
                 use_karras_sigmas=False)


def _vocabulary() -> list[tuple[str, float, int]]:
    """(piece, score, type) in id order: specials, bytes, BPE merges, characters."""
    words = Counter()
    for text in CORPUS:
        for word in ("▁" + text.replace(" ", " ▁")).split(" "):
            words[tuple(word)] += 1
    merged: list[str] = []
    for _ in range(MERGES):
        pairs: Counter = Counter()
        for word, count in words.items():
            for a, b in itertools.pairwise(word):
                pairs[a, b] += count
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda item: (item[1], item[0]))
        merged.append(a + b)
        joined = {}
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == (a, b):
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            joined[tuple(out)] = count
        words = Counter(joined)
    chars = sorted({c for text in CORPUS for c in "▁" + text.replace(" ", "▁")})
    pieces = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
    pieces += [(f"<0x{b:02X}>", 0.0, 6) for b in range(256)]
    pieces += [(piece, -float(i + 1), 1) for i, piece in enumerate(merged)]
    pieces += [(c, -float(len(merged) + i + 1), 1) for i, c in enumerate(chars)
               if c not in merged]
    return pieces


VOCAB = _vocabulary()
VOCAB_SIZE = len(VOCAB) + 9  # ChatGLM's nine ids after the SentencePiece ones
CHATGLM_TINY["padded_vocab_size"] = VOCAB_SIZE + 3


def spm_encode(text: str) -> list[int]:
    """SentencePiece's BPE encoding of `text` with VOCAB (identity normalizer, extra spaces
    removed, dummy prefix), by its rule (module docstring)."""
    text = " ".join(part for part in text.split(" ") if part)
    if not text:
        return []
    ids = {piece: i for i, (piece, _, kind) in enumerate(VOCAB) if kind == 1}
    symbols = list("▁" + text.replace(" ", "▁"))
    while True:
        best = None
        for i in range(len(symbols) - 1):
            joined = symbols[i] + symbols[i + 1]
            if joined in ids and (best is None or VOCAB[ids[joined]][1] > VOCAB[ids[best[1]]][1]):
                best = (i, joined)
        if best is None:
            break
        symbols[best[0]:best[0] + 2] = [best[1]]
    out = []
    for symbol in symbols:
        out += [ids[symbol]] if symbol in ids else [3 + b for b in symbol.encode("utf-8")]
    return out


def write_spm(folder: Path) -> Path:
    """VOCAB as a SentencePiece BPE tokenizer.model in `folder` (transformers' protobuf
    classes write it)."""
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    for piece, score, kind in VOCAB:
        entry = proto.pieces.add()
        entry.piece, entry.score, entry.type = piece, score, kind
    proto.trainer_spec.model_type = 2
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.pad_id = -1
    proto.normalizer_spec.name = "identity"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.model"
    path.write_bytes(proto.SerializeToString())
    return path


class FakeSPM:
    """sentencepiece.SentencePieceProcessor as diffusers' SPTokenizer calls it, on VOCAB and
    spm_encode (module docstring)."""

    def __init__(self, model_file: str) -> None:
        self.model_file = model_file

    def vocab_size(self) -> int:
        return len(VOCAB)

    get_piece_size = vocab_size

    def bos_id(self) -> int:
        return 1

    def eos_id(self) -> int:
        return 2

    def unk_id(self) -> int:
        return 0

    def encode(self, text: str) -> list[int]:
        return spm_encode(text)

    def EncodeAsPieces(self, text: str) -> list[str]:
        return [VOCAB[i][0] for i in spm_encode(text)]

    def PieceToId(self, piece: str) -> int:
        return next((i for i, entry in enumerate(VOCAB) if entry[0] == piece), 0)

    def IdToPiece(self, index: int) -> str:
        return VOCAB[index][0]


def chatglm_tokenizer(folder: Path) -> Any:
    """diffusers' ChatGLMTokenizer on write_spm(folder), through FakeSPM."""
    import diffusers.pipelines.kolors.tokenizer as module

    sys.modules.setdefault("sentencepiece", types.SimpleNamespace(SentencePieceProcessor=FakeSPM))
    module.is_sentencepiece_available = lambda: True
    return module.ChatGLMTokenizer(str(write_spm(folder)))


def chatglm(seed: int = 3) -> Any:
    """diffusers' ChatGLMModel at CHATGLM_TINY, every parameter redrawn; the embeddings
    widened (x3) so that a prompt's tokens outweigh the padding's in the hidden states."""
    import torch
    from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig, ChatGLMModel

    model = sd_tiny.randomized(ChatGLMModel(ChatGLMConfig(**CHATGLM_TINY), empty_init=False),
                               seed)
    with torch.no_grad():
        model.embedding.word_embeddings.weight.mul_(3.0)
    return model


def kolors_pipeline(scratch: Path, seed: int = 0) -> Any:
    """diffusers' KolorsPipeline of tiny random models (module docstring)."""
    import diffusers
    import torch
    from diffusers.pipelines.kolors.pipeline_kolors import KolorsPipeline

    unet = sd_tiny.randomized(diffusers.UNet2DConditionModel(**UNET_KOLORS_TINY), seed + 1)
    with torch.no_grad():  # the prompt's say in the picture: the context and its k/v larger
        unet.encoder_hid_proj.weight.mul_(4.0)
        for name, param in unet.named_parameters():
            if "attn2.to_k" in name or "attn2.to_v" in name:
                param.mul_(3.0)
    vae = sd_tiny.randomized(diffusers.AutoencoderKL(**sdxl_tiny.VAE_SDXL_TINY), seed + 2)
    return KolorsPipeline(vae=vae, text_encoder=chatglm(seed + 3),
                          tokenizer=chatglm_tokenizer(scratch / "tokenizer"), unet=unet,
                          scheduler=diffusers.EulerDiscreteScheduler(**SCHEDULER),
                          force_zeros_for_empty_prompt=False)


_CACHE: dict[str, SimpleNamespace] = {}


def kolors_folder(tmp_path_factory: Any) -> SimpleNamespace:
    """kolors_pipeline() saved as a diffusers folder once per session: `.path`, `.pipe`."""
    if "kolors" not in _CACHE:
        root = tmp_path_factory.mktemp("kolors-tiny")
        pipe = kolors_pipeline(root / "scratch")
        pipe.set_progress_bar_config(disable=True)
        pipe.save_pretrained(root / "Kolors-tiny", safe_serialization=True)
        _CACHE["kolors"] = SimpleNamespace(path=root / "Kolors-tiny", pipe=pipe)
    return _CACHE["kolors"]


def karras_euler(pipe: Any, prompt: str, *, steps: int, seed: int, size: int,
                 **settings: Any) -> Any:
    """diffusers' Euler in `pipe` (a KolorsPipeline) on the WebUI's Karras sigmas (rho 7)
    between the 1100-step schedule's least and greatest sigma, computed here from its betas
    in float64, starting from sigma_max ("linspace" spacing: no sqrt(sigma^2 + 1)): the
    WebUI's "Euler" with "Karras". `settings`: the pipeline's other arguments."""
    import diffusers
    import numpy as np
    import torch
    from diffusers.pipelines.kolors.pipeline_kolors import KolorsPipeline

    betas = np.linspace(SCHEDULER["beta_start"] ** 0.5, SCHEDULER["beta_end"] ** 0.5,
                        SCHEDULER["num_train_timesteps"]) ** 2
    abar = np.cumprod(1 - betas)
    table = np.sqrt((1 - abar) / abar)
    lo, hi = table[0] ** (1 / 7), table[-1] ** (1 / 7)
    sigmas = [*(hi + np.linspace(0, 1, steps) * (lo - hi)) ** 7, 0.0]  # diffusers: n + 1
    euler = diffusers.EulerDiscreteScheduler(**{**SCHEDULER, "timestep_spacing": "linspace"})
    reference = KolorsPipeline(**{**pipe.components, "scheduler": euler})
    reference.set_progress_bar_config(disable=True)
    return reference(prompt, sigmas=sigmas, width=size, height=size,
                     generator=torch.Generator().manual_seed(seed), output_type="np",
                     **settings).images
