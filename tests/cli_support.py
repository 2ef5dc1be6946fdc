"""Shared pieces of the tests that drive `python -m diffusion` in-process: one CLI call that
must succeed (or fail with one line), and the pictures it wrote as arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import diffusion.cli.main as cli


def cli_ok(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    """(stdout stripped, stderr) of `diffusion argv...`; fails the test with its stderr unless
    it exits 0."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out.strip(), err


def cli_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one `error:` line of `diffusion argv...`, a refused run; fails the test unless it
    exits non-zero with exactly one such line and no traceback."""
    code = cli.main(list(argv))
    _, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and "Traceback" not in err and len(errors) == 1, err
    return errors[0]


def png_pixels(path: str | Path, dtype: type[np.floating] = np.float32) -> np.ndarray:
    """The picture at `path` as height x width x 3 `dtype` in [0, 1]."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype) / 255


def png_levels(path: str | Path) -> np.ndarray:
    """The picture at `path` as height x width x 3 of its 8-bit levels, int16 (a difference of
    two keeps its sign): for comparisons within a level of a reference's rounding."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), np.int16)


def png_frames(folder: str | Path) -> np.ndarray:
    """A video written as a folder of PNG frames: frames x height x width x 3 float32 in
    [0, 1], in the frames' name order."""
    return np.stack([png_pixels(f) for f in sorted(Path(folder).glob("*.png"))])


def cli_picture(capsys: pytest.CaptureFixture[str], *argv: str) -> np.ndarray:
    """The picture that `diffusion argv...` wrote, as float64 in [0, 1]; fails the test with
    the CLI's stderr unless it exits 0."""
    return png_pixels(cli_ok(capsys, *argv)[0], np.float64)
