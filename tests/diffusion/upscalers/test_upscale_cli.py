"""`python -m diffusion upscale`: arguments, output naming, errors (Lanczos: no GPU needed; the
model upscalers' numbers are test_model_upscalers.py's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusion.cli.main import main

pytestmark = pytest.mark.nodevice


def test_upscale_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    picture = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "in.png")
    assert main(["upscale", str(tmp_path / "in.png"), "--scale", "2"]) == 0
    written = Path(capsys.readouterr().out.strip())
    assert written == tmp_path / "in-Lanczos-x2.png"
    want = Image.fromarray(picture).resize((48, 40), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(Image.open(written)), np.asarray(want))
    for argv, message in ((["--upscaler", "R-ESRGAN 4x+"], "unknown upscaler 'R-ESRGAN 4x+'"),
                          (["--scale", "9"], "--scale must be from 1 to 8"),
                          (["--upscaler", "nope.pth"], "no such file"),
                          (["--upscaler-dir", str(tmp_path / "none")], "does not exist"),
                          (["--out", str(tmp_path / "up.txt")], "cannot write '.txt' pictures"),
                          (["--out", str(tmp_path / "none" / "up.png")], "none' does not exist"),
                          (["--out", str(tmp_path)], "is a folder")):
        assert main(["upscale", str(tmp_path / "in.png"), *argv]) == 2
        assert message in capsys.readouterr().err
    assert main(["upscale", str(tmp_path / "missing.png")]) == 2
    assert "no such image" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in-Lanczos-x2.png", "in.png"]


def test_upscale_command_16_bit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 16-bit PNG (I;16) is scaled to 8 bits, not clipped white by Pillow's convert()."""
    ramp = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert main(["upscale", str(tmp_path / "deep.png"), "--scale", "1",
                 "--upscaler", "Nearest"]) == 0
    out = np.asarray(Image.open(capsys.readouterr().out.strip()))
    assert np.array_equal(out, np.repeat((ramp >> 8).astype(np.uint8)[..., None], 3, axis=2))
