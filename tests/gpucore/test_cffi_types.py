"""gpucore._cffi_types: cffi's parse of a C type or declaration, given only the typedef names
the text uses, reads the same declarations and types as cffi's own, with far fewer lines."""

from __future__ import annotations

import pytest

from gpucore import _cffi_types

cffi = pytest.importorskip("cffi")
from cffi import cparser  # noqa: E402

# Many typedefs (as webgpu.h has), a struct that uses some of them, a function pointer type
# and a name that is a type in one text and not mentioned in another
HEADER = "\n".join([f"typedef struct Opaque{i} * Handle{i};" for i in range(300)] + [
    "typedef uint32_t Flags;",
    "typedef void (*Callback)(Handle3 handle, Flags flags, void * userdata);",
    "typedef struct Chained { struct Chained const * next; Flags kind; } Chained;",
    "typedef struct Descriptor { Chained const * nextInChain; Handle7 layout;"
    " Callback callback; size_t count; Handle1 const * entries; } Descriptor;",
])
TYPES = ["Descriptor *", "Callback", "Handle7[4]", "Chained const *",
         "void (*)(Descriptor *, Flags)", "size_t"]


def _original() -> object:
    parse = cparser.Parser._parse
    return getattr(parse, "__wrapped__", parse)


@pytest.mark.nodevice
def test_the_parse_reads_the_same_with_fewer_typedefs() -> None:
    parser = cparser.Parser()
    parser.parse(HEADER)
    original, wrapped = _original(), _cffi_types._wrap(_original())
    for text in TYPES:
        source = f"void __dummy(\n{text}\n);"
        full, _, _ = original(parser, source)
        cut, _, _ = wrapped(parser, source)
        assert repr(cut.ext[-1]) == repr(full.ext[-1]), text  # the same declaration read
        assert len(cut.ext) < len(full.ext) / 10, text  # without ~300 typedef lines
    assert len(parser._declarations) > 300  # the full table is back after each parse


@pytest.mark.nodevice
def test_an_ffi_with_it_gives_the_same_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cparser.Parser, "_parse", _original())
    plain = cffi.FFI()
    plain.cdef(HEADER)
    want = {text: (plain.getctype(text), plain.sizeof(text)) for text in TYPES}
    monkeypatch.setattr(_cffi_types, "_installed", False)
    assert _cffi_types.install() and _cffi_types.install()  # once, then already
    assert cparser.Parser._parse.__wrapped__ is _original()
    cut = cffi.FFI()
    cut.cdef(HEADER)
    assert {text: (cut.getctype(text), cut.sizeof(text)) for text in TYPES} == want
    assert cut.new("Descriptor *").count == 0


@pytest.mark.nodevice
def test_it_can_be_left_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cparser.Parser, "_parse", _original())
    monkeypatch.setattr(_cffi_types, "_installed", False)
    monkeypatch.setenv(_cffi_types.ENV, "0")
    assert not _cffi_types.install()
    assert cparser.Parser._parse is _original()
