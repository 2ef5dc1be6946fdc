"""A SentencePiece `tokenizer.model` read without the sentencepiece library: the few fields of
its protobuf (`ModelProto`) a tokenizer is rebuilt from, decoded by hand (varints and
length-delimited fields; the rest skipped). Written here because neither the sentencepiece nor
the protobuf package is a dependency, and `tokenizers` builds a tokenizer from pieces and
scores but reads no .model file; these ~100 lines are the whole of what Kolors' ChatGLM3
tokenizer needs of the format.

    model = read_sentencepiece("tokenizer/tokenizer.model")
    model.pieces[5]          # ("▁the", -2.0, NORMAL)
    model.byte_fallback, model.add_dummy_prefix

sentencepiece: `sentencepiece_model_pb2.ModelProto().ParseFromString(data)`.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

__all__ = ["BPE", "BYTE", "CONTROL", "NORMAL", "UNIGRAM", "UNKNOWN", "USER_DEFINED",
           "SentencePieceModel", "read_sentencepiece"]

# SentencePiece.Type and TrainerSpec.ModelType values
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM, BPE = 1, 2


@dataclass(frozen=True)
class SentencePieceModel:
    """What a tokenizer.model says: its pieces (piece, score, type) in id order; the
    trainer's model type (UNIGRAM, BPE, ...), byte fallback and special ids; the normalizer's
    name, precompiled map and whitespace handling. Defaults are the proto's."""

    pieces: list[tuple[str, float, int]]
    model_type: int = UNIGRAM
    byte_fallback: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    treat_whitespace_as_suffix: bool = False
    normalizer: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of each field of one message: an int for varint and fixed-width
    fields (32-bit ones as their raw bits), bytes for length-delimited ones."""
    out: list[tuple[int, int | bytes]] = []
    at = 0

    def varint() -> int:
        nonlocal at
        value = shift = 0
        while True:
            byte = data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while at < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            out.append((number, varint()))
        elif wire == 1:
            out.append((number, int.from_bytes(data[at:at + 8], "little")))
            at += 8
        elif wire == 2:
            size = varint()
            out.append((number, data[at:at + size]))
            at += size
        elif wire == 5:
            out.append((number, int.from_bytes(data[at:at + 4], "little")))
            at += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    if at != len(data):
        raise ValueError("truncated protobuf message")
    return out


def _int32(value: int) -> int:  # a negative int32 is sent as its 64-bit two's complement
    return value - (1 << 64) if value >= 1 << 63 else value


def read_sentencepiece(path: str | os.PathLike[str]) -> SentencePieceModel:
    """The SentencePiece model at `path`; ValueError naming the file where it is not one."""
    try:
        with open(path, "rb") as file:
            data = file.read()
        fields = _fields(data)
        pieces: list[tuple[str, float, int]] = []
        trainer: dict[int, int] = {}
        normal: dict[int, int | bytes] = {}
        for number, value in fields:
            if number == 1 and isinstance(value, bytes):
                piece = dict(_fields(value))
                raw_score = piece.get(2, 0)
                score = struct.unpack("<f", int(raw_score).to_bytes(4, "little"))[0]  # type: ignore[arg-type]
                pieces.append((bytes(piece.get(1, b"")).decode("utf-8"), score,  # type: ignore[arg-type]
                               int(piece.get(3, NORMAL))))  # type: ignore[arg-type]
            elif number == 2 and isinstance(value, bytes):
                trainer = {k: v for k, v in _fields(value) if isinstance(v, int)}
            elif number == 3 and isinstance(value, bytes):
                normal = dict(_fields(value))
    except (IndexError, ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a SentencePiece model ({error})") from None
    if not pieces:
        raise ValueError(f"{path} is not a SentencePiece model: it holds no pieces")
    name = normal.get(1, b"")
    charsmap = normal.get(2, b"")
    return SentencePieceModel(
        pieces, model_type=trainer.get(3, UNIGRAM), byte_fallback=bool(trainer.get(35, 0)),
        unk_id=_int32(trainer.get(40, 0)), bos_id=_int32(trainer.get(41, 1)),
        eos_id=_int32(trainer.get(42, 2)), treat_whitespace_as_suffix=bool(trainer.get(24, 0)),
        normalizer=bytes(name).decode("utf-8") if isinstance(name, bytes) else "",
        precompiled_charsmap=charsmap if isinstance(charsmap, bytes) else b"",
        add_dummy_prefix=bool(normal.get(3, 1)), remove_extra_whitespaces=bool(normal.get(4, 1)),
        escape_whitespaces=bool(normal.get(5, 1)))
