"""Shared pieces of the tests that drive `python -m diffusion` in-process: one CLI call that
must succeed, and the picture it wrote as float32 RGB in [0, 1]."""

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


def png_pixels(path: str) -> np.ndarray:
    """The picture at `path` as height x width x 3 float32 in [0, 1]."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), np.float32) / 255
