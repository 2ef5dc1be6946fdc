"""cffi's type parsing, made to read only the type names a declaration uses.

wgpu-py and wgpudawn call cffi's `ffi.new("WGPUSomeStruct *")` with a C type string, and cffi
parses each new string with pycparser (pure Python) the first time a process uses it. Before
every such parse cffi writes out one `typedef int NAME;` line for every type the library's
header declared (~440 for webgpu.h), because pycparser must know which identifiers are type
names: each `ffi.new` of a new struct parsed ~450 lines to read one. A cold process meets ~50
such types, and with the header's own parse that was most of opening a device (cProfile on
lavapipe: 10.9 of 12.2 s inside pycparser for `Device.auto()`).

Only identifiers that occur in the parsed text can be type names there, so the typedef lines
of the others change nothing in the result: `install()` wraps cffi's `Parser._parse` to write
out only the names that occur in the text (plus cffi's own common ones, as before). The
result is the same AST for the same text. It is installed once, where gpucore imports wgpu,
and only on the cffi versions it was checked against (the 1.x and 2.x `Parser._parse` that
reads `self._declarations` for its typedef names); on others cffi is left as it is.
`GPUCORE_CFFI_TYPES=0` leaves it alone too.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ENV", "install", "installed"]

ENV = "GPUCORE_CFFI_TYPES"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_lock = threading.Lock()
_installed = False


def installed() -> bool:
    """Whether cffi's parser reads only the type names a text uses (module docstring)."""
    return _installed


def _wrap(original: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    def _parse(self: Any, csource: str) -> Any:
        declarations = self._declarations
        used = set(_IDENTIFIER.findall(csource))
        # cffi takes its typedef names from the keys "typedef NAME"; the rest it reads after
        # the parse (lookups by name), so the full dict is back before anything reads it
        self._declarations = {key: value for key, value in declarations.items()
                              if not key.startswith("typedef ") or key[8:] in used}
        try:
            return original(self, csource)
        finally:
            self._declarations = declarations

    _parse.__wrapped__ = original  # type: ignore[attr-defined]
    return _parse


def install() -> bool:
    """Wrap cffi's `Parser._parse` (module docstring), once; True when it is wrapped."""
    global _installed
    with _lock:
        if _installed:
            return True
        if os.environ.get(ENV, "1").strip() == "0":
            return False
        try:
            import cffi
            from cffi import cparser
        except ImportError:
            return False
        major = str(getattr(cffi, "__version__", "0")).split(".")[0]
        parse = getattr(getattr(cparser, "Parser", None), "_parse", None)
        if major not in ("1", "2") or parse is None or not _reads_declarations(parse):
            return False
        cparser.Parser._parse = _wrap(parse)
        _installed = True
        return True


def _reads_declarations(parse: Callable[..., Any]) -> bool:
    """Whether `parse` takes its typedef names from `self._declarations` (the form checked)."""
    code = getattr(parse, "__code__", None)
    return code is not None and "_declarations" in code.co_names
