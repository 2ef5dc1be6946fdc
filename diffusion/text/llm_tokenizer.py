"""The tokenizers of the LLM text encoders (Qwen3 for Z-Image) from the model's
`tokenizer.json`, on the `tokenizers` library, and the chat template the pipelines wrap a
prompt in before encoding it.

The file carries the byte-level BPE and its special tokens, so nothing here re-implements
them; the template is rendered here (Qwen3's, one user message and the generation prompt),
not by a Jinja engine over the folder's `chat_template`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tokenizers.processors import TemplateProcessing

from .qwen2_bpe import has_vocab_files, qwen2_tokenizer

__all__ = ["LLMTokenizer", "mistral_chat_prompt", "qwen3_chat_prompt"]


def qwen3_chat_prompt(text: str, *, enable_thinking: bool = True) -> str:
    """One user message and the assistant's turn opened, as Qwen3's chat template renders
    it. transformers: `tokenizer.apply_chat_template([{"role": "user", "content": text}],
    tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking)`."""
    opened = "" if enable_thinking else "<think>\n\n</think>\n\n"
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n{opened}"


def mistral_chat_prompt(text: str, system: str) -> str:
    """A system message and one user message, as Mistral Small 3.1's chat template renders
    them (FLUX.2 dev's prompt; no generation prompt follows in Mistral's template). transformers:
    `tokenizer.apply_chat_template([{"role": "system", "content": [{"type": "text", "text":
    system}]}, {"role": "user", "content": [{"type": "text", "text": text}]}],
    tokenize=False)`."""
    return f"<s>[SYSTEM_PROMPT]{system}[/SYSTEM_PROMPT][INST]{text}[/INST]"


class LLMTokenizer:
    """Prompts -> (token ids, attention mask), each (B, L) int64.

    `path`: a folder holding `tokenizer.json` (and `tokenizer_config.json`, whose
    `pad_token` and `padding_side` apply; Qwen's: <|endoftext|>, right; `add_bos_token` puts
    `bos_token` first where the file has no post-processor, as transformers does), or the file
    itself; `pad_with_eos`: the config's `eos_token` pads instead (HiDream's Llama 3);
    a folder with `vocab.json` and `merges.txt` instead (a slow Qwen2Tokenizer's, as
    Qwen-Image's) reads them as Qwen2's byte-level BPE (`qwen2_bpe`).
    transformers: `AutoTokenizer.from_pretrained(folder)(prompts, padding="max_length",
    max_length=, truncation=True)`.
    """

    def __init__(self, path: str | Path, *, pad_with_eos: bool = False) -> None:
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        slow = path.is_dir() and not file.is_file() and has_vocab_files(path)
        if not file.is_file() and not slow:
            raise ValueError(f"no tokenizer.json at {path}: give the model folder's tokenizer/ "
                             "(it holds tokenizer.json, or vocab.json and merges.txt)")
        config_file = file.parent / "tokenizer_config.json"
        config = (json.loads(config_file.read_text(encoding="utf-8"))
                  if config_file.is_file() else {})
        self.tokenizer = qwen2_tokenizer(path) if slow else Tokenizer.from_file(str(file))
        # padding and truncation are done below; a tokenizer.json saved by transformers after
        # a padded call keeps them on (padding to its last max_length), which would pad here
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        bos = config.get("bos_token")
        bos = str(bos.get("content", "")) if isinstance(bos, dict) else bos
        if self.tokenizer.post_processor is None and config.get("add_bos_token") and bos:
            # a file without its post-processor: transformers writes the one adding <bos>
            # that the config asks for (Gemma's: add_bos_token true)
            bos_id = self.tokenizer.token_to_id(bos)
            if bos_id is None:
                raise ValueError(f"the tokenizer at {path} has no beginning token {bos!r}")
            self.tokenizer.post_processor = TemplateProcessing(
                single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                special_tokens=[(bos, bos_id)])
        # pad_with_eos: the config's eos_token pads (HiDream's Llama 3, as its diffusers
        # pipeline sets `tokenizer_4.pad_token = tokenizer_4.eos_token`)
        pad = (config.get("eos_token") if pad_with_eos else config.get("pad_token")) or (
            "<|endoftext|>")
        pad = str(pad.get("content", "")) if isinstance(pad, dict) else str(pad)
        pad_id = self.tokenizer.token_to_id(pad)
        if pad_id is None:
            raise ValueError(f"the tokenizer at {path} has no padding token {pad!r}")
        self.pad_id = pad_id
        self.padding_side = config.get("padding_side", "right")

    def __call__(self, prompts: Sequence[str], max_length: int = 512, *,
                 padding: str = "max_length", add_special_tokens: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Each prompt's ids truncated to `max_length`, padded on the padding side to
        `max_length` ("max_length") or to the longest in the batch ("longest").
        `add_special_tokens`: False for a prompt a chat template rendered (its BOS already
        written, as transformers' `apply_chat_template` tokenizes)."""
        if padding not in ("max_length", "longest"):
            raise ValueError(f"padding must be 'max_length' or 'longest', got {padding!r}")
        encoded = [e.ids[:max_length] for e in self.tokenizer.encode_batch(
            list(prompts), add_special_tokens=add_special_tokens)]
        length = max_length if padding == "max_length" else max(map(len, encoded), default=0)
        ids = np.full((len(encoded), length), self.pad_id, np.int64)
        mask = np.zeros((len(encoded), length), np.int64)
        for row, tokens in enumerate(encoded):
            span = slice(length - len(tokens), length) if self.padding_side == "left" else (
                slice(0, len(tokens)))
            ids[row, span] = tokens
            mask[row, span] = 1
        return ids, mask
