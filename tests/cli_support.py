"""Shared pieces of the tests that drive `python -m diffusion` in-process: one CLI call that
must succeed, and the picture it wrote as RGB in [0, 1]."""

from __future__ import annotations

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


def png_pixels(path: str, dtype: type[np.floating] = np.float32) -> np.ndarray:
    """The picture at `path` as height x width x 3 `dtype` in [0, 1]."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype) / 255


def cli_picture(capsys: pytest.CaptureFixture[str], *argv: str) -> np.ndarray:
    """The picture that `diffusion argv...` wrote, as float64 in [0, 1]; fails the test with
    the CLI's stderr unless it exits 0."""
    return png_pixels(cli_ok(capsys, *argv)[0], np.float64)
