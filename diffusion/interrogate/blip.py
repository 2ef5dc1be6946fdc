"""BLIP's caption of a picture, the first part of the WebUI's CLIP interrogation, as its
`modules/interrogate.py` makes it: the picture resized to 384x384 (bicubic), normalized with
CLIP's mean and deviation, encoded by BLIP's ViT, and its caption decoded after the prompt
"a picture of " (greedy, or beam search with `interrogate_clip_num_beams`; at least
`interrogate_clip_min_length` and at most `interrogate_clip_max_length` tokens, the prompt's
counted), the prompt cut from the text.

    blip = BlipCaptioner(Path("models/BLIP"))
    blip.caption(picture, BLIP_OPTIONS)     # "a woman in a red dress standing in a field"

The folder holds Salesforce's `model_base_caption_capfilt_large.pth` (the file the WebUI
downloads into models/BLIP; any .pth of the folder), read without running its pickle, and
`vocab.txt`, BERT's uncased WordPiece vocabulary (bert-base-uncased's, which the WebUI's BLIP
fetches from Hugging Face into its cache), read through `tokenizers`. Both are read once per
device, on first use there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device

from ..process_shared import process_shared
from .decoding import beam_search, greedy
from .deepbooru import InterrogateModelError
from .per_device import PerDevice

__all__ = ["BLIP_OPTIONS", "BlipCaptioner", "check_blip_options"]

FILE_NAME = "model_base_caption_capfilt_large.pth"
IMAGE_SIZE = 384  # the WebUI's blip_image_eval_size
VOCAB = "vocab.txt"
PROMPT = "a picture of "
# the WebUI's options, defaults and slider ranges (its "Interrogate" section)
BLIP_OPTIONS: dict[str, Any] = {"interrogate_clip_num_beams": 1,
                                "interrogate_clip_min_length": 24,
                                "interrogate_clip_max_length": 48}
_RANGES = {"interrogate_clip_num_beams": 16, "interrogate_clip_min_length": 128,
           "interrogate_clip_max_length": 256}
_MEAN = np.asarray((0.48145466, 0.4578275, 0.40821073), np.float32)
_STD = np.asarray((0.26862954, 0.26130258, 0.27577711), np.float32)


def check_blip_options(body: Mapping[str, Any]) -> dict[str, Any]:
    """BLIP_OPTIONS' entries of an options body, checked: ValueError saying which is wrong."""
    updates: dict[str, Any] = {}
    for key, most in _RANGES.items():
        if key not in body:
            continue
        value = body[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                value != int(value) or not 1 <= value <= most:
            raise ValueError(f"{key} must be a whole number from 1 to {most}, got {value!r}")
        updates[key] = int(value)
    return updates


class _Checkpoint(Mapping[str, Any]):
    """A BLIP file's tensors without the "model." its `torch.save({"model": ...})` puts before
    them, read one at a time."""

    def __init__(self, file: Any) -> None:
        self._file = file
        keys = file.keys()
        self._prefix = "model." if any(key.startswith("model.") for key in keys) else ""
        self._keys = {key[len(self._prefix):] for key in keys if key.startswith(self._prefix)}

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._keys:
            raise KeyError(key)
        return self._file.read(self._prefix + key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._file.shape(self._prefix + key))


class BlipCaptioner:
    """BLIP from `folder` (None: none given), read once onto each device a call names (`device`
    where it names none; None: the default device) on its first use there, for pictures
    resized to `image_size` (the WebUI's 384; a file made for another size gets its position
    embeddings resized, as BLIP's loader does)."""

    def __init__(self, folder: Path | None, image_size: int = IMAGE_SIZE, *,
                 device: Device | None = None) -> None:
        self.folder, self.device, self.image_size = folder, device, image_size
        self._networks: PerDevice[tuple[Any, Any]] = PerDevice()

    def __reduce__(self) -> tuple[Any, ...]:
        # a job sent to a worker process (serve --devices) takes that process's own BLIP of
        # the folder along (diffusion.process_shared), on that process's GPU
        return process_shared, (BlipCaptioner, self.folder, self.image_size)

    def forget(self) -> None:
        """Drop every device's network (the server's unload-checkpoint: its GPU memory goes
        once nothing else holds it); the next caption reads it again."""
        self._networks.clear()

    def files(self) -> tuple[Path, Path]:
        """(the .pth, vocab.txt); InterrogateModelError naming the folder and what to add."""
        folder = self.folder
        found = sorted(folder.glob("*.pth")) if folder and folder.is_dir() else []
        where = f"in {folder}" if folder else "(no BLIP folder given)"
        if not found:
            raise InterrogateModelError(
                f"model 'clip': no BLIP captioner (.pth) {where}; put Salesforce's {FILE_NAME} "
                "there (the WebUI's models/BLIP; --blip-dir)")
        if not (folder and (folder / VOCAB).is_file()):
            raise InterrogateModelError(
                f"model 'clip': no {VOCAB} {where}; put bert-base-uncased's {VOCAB} there "
                "(BLIP's tokenizer; the WebUI's copy is in the Hugging Face cache, "
                "models--bert-base-uncased/snapshots/*/vocab.txt)")
        named = [path for path in found if path.name == FILE_NAME]
        return (named or found)[0], folder / VOCAB

    def check(self) -> None:
        """InterrogateModelError when a file is missing."""
        self.files()

    def load(self, device: Device | None = None) -> tuple[Any, Any]:
        """(the network, diffusion.models.blip.BlipDecoder; the tokenizer) on `device` (None:
        this captioner's), read there on first use."""
        from ..loaders import WeightsError
        from ..loaders.formats.torch_file import TorchFile
        from ..models.blip import BlipDecoder

        path, vocab = self.files()

        def read(where: Device) -> tuple[Any, Any]:
            try:
                tokenizer = _tokenizer(vocab)
            except Exception as error:  # tokenizers raises a bare Exception
                raise InterrogateModelError(
                    f"model 'clip': {vocab}: not a BERT vocab.txt: {error}") from None
            try:
                state = _Checkpoint(TorchFile(path))
                words = "text_decoder.bert.embeddings.word_embeddings.weight"
                size = state.shape(words)[0] if words in state else None
                if size not in (None, tokenizer.get_vocab_size()):
                    raise ValueError(f"{vocab} and [DEC], [ENC] make "
                                     f"{tokenizer.get_vocab_size()} tokens, the file's "
                                     f"decoder reads {size}; use bert-base-uncased's {VOCAB}")
                model = BlipDecoder.from_state_dict(state, image_size=self.image_size,
                                                    device=where)
            except (WeightsError, ValueError, OSError) as error:
                text = str(error)
                raise InterrogateModelError(
                    f"model 'clip': {text if str(path) in text else f'{path}: {text}'}"
                ) from None
            return model, tokenizer
        return self._networks.get(device or self.device or default_device(), read)

    def pixels(self, picture: Any, device: Device | None = None) -> np.ndarray:
        """A PIL picture as BLIP's ViT reads it (1, 3, S, S): resized to S x S (Pillow's
        bicubic), 0..1, normalized. torchvision: the WebUI's `transforms.Compose` of
        `generate_caption`. (`device`: the network whose size it reads.)"""
        from PIL import Image

        size = self.load(device)[0].visual_encoder.image_size
        resized = picture.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(resized, np.float32) / np.float32(255)
        return np.ascontiguousarray(((array - _MEAN) / _STD).transpose(2, 0, 1)[None])

    def token_ids(self, picture: Any, options: Mapping[str, Any],
                  device: Device | None = None) -> list[int]:
        """The decoded token ids, prompt and end token included, under BLIP_OPTIONS, by the
        network on `device` (None: this captioner's)."""
        settings = {**BLIP_OPTIONS, **options}
        model, tokenizer = self.load(device)
        beams = int(settings["interrogate_clip_num_beams"])
        embeds = model.visual_encoder(self.pixels(picture, device))
        decoder = model.text_decoder
        cache = decoder.start(embeds, beams)
        prompt = [tokenizer.token_to_id("[DEC]"),
                  *tokenizer.encode(PROMPT, add_special_tokens=False).ids]
        lengths = {"eos": tokenizer.token_to_id("[SEP]"),
                   "min_length": int(settings["interrogate_clip_min_length"]),
                   "max_length": int(settings["interrogate_clip_max_length"])}
        if beams == 1:
            return greedy(lambda ids: decoder.step(cache, ids), prompt, **lengths)
        return beam_search(lambda ids: decoder.step(cache, ids), cache.reorder, prompt,
                           beams=beams, **lengths)

    def caption(self, picture: Any, options: Mapping[str, Any],
                device: Device | None = None) -> str:
        """BLIP's caption of a PIL picture, the prompt cut off, as the WebUI's
        `generate_caption` gives it, on `device` (None: this captioner's; a server's worker
        names its own GPU)."""
        tokenizer = self.load(device)[1]
        text = tokenizer.decode(self.token_ids(picture, options, device),
                                skip_special_tokens=True)
        return str(text)[len(PROMPT):]


def _tokenizer(vocab: Path) -> Any:
    """BERT's uncased WordPiece tokenizer with BLIP's [DEC] and [ENC] added after the vocabulary
    (transformers: BLIP's `init_tokenizer`)."""
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(str(vocab), lowercase=True)
    tokenizer.add_special_tokens(["[DEC]", "[ENC]"])
    return tokenizer
