"""Output paths checked before the work: a command that cannot write its result says so in one
line before the model loads, not after the generation (or the conversion) is done."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["check_output_file", "check_writable"]


def check_writable(folder: Path, what: str) -> None:
    """ValueError in one line unless a file can be made in the existing folder `folder`.

    os.access answers for a read-only mount or a folder without permission; a temporary file
    (deleted at once) answers where root passes os.access and the file system still refuses
    (/sys, /proc, a full disk's quota)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        read_only = os.statvfs(folder).f_flag & os.ST_RDONLY if hasattr(os, "statvfs") else 0
        reason = "a read-only file system" if read_only else "no permission"
    else:
        try:
            with tempfile.TemporaryFile(dir=folder):
                return
        except OSError as exc:
            reason = exc.strerror or str(exc)
    raise ValueError(f"{what}: cannot write in {str(folder)!r} ({reason}); give a folder you "
                     "can write to")


def check_output_file(target: Path, what: str, suffix: str, *,
                      make_folders: bool = False) -> None:
    """ValueError in one line unless the file `target` can be written: it is not a folder, its
    folder exists (with `make_folders`, the nearest existing one above it is a folder, as the
    writer makes the rest) and takes new files. `what` names the option, e.g. "--out";
    `suffix` is the kind of file written (".png"), for the example a message gives."""
    if target.is_dir():
        raise ValueError(f"{what} {str(target)!r} is a folder; give a file name, e.g. "
                         f"{str(target / ('out' + suffix))!r}")
    folder = target.parent
    if make_folders:
        folder = next(p for p in target.parents if p.exists())
    if not folder.is_dir():
        problem = "is a file" if folder.exists() else "does not exist"
        raise ValueError(f"{what} {str(target)!r}: the folder {str(folder)!r} {problem}")
    check_writable(folder, f"{what} {str(target)!r}")
