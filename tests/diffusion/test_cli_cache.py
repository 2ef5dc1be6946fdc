"""`python -m diffusion cache`: where the cache is, what it holds, and clearing it."""

from __future__ import annotations

from pathlib import Path

import pytest

import diffusion.cli.main as cli


@pytest.mark.nodevice
def test_cache_info_and_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AVX_GPU_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache" / "mesa").mkdir(parents=True)
    (tmp_path / "cache" / "mesa" / "entry").write_bytes(b"x" * (3 << 20))
    (tmp_path / "cache" / "autotune-1.json").write_bytes(b"{}")
    assert cli.main(["cache"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "cache") in out and "mesa 3.0 MiB" in out
    assert cli.main(["cache", "clear"]) == 0
    assert "3.0 MiB" in capsys.readouterr().out
    assert list((tmp_path / "cache").iterdir()) == []
    assert cli.main(["cache", "wipe"]) == 2  # one error line, not a traceback
    assert "invalid choice: 'wipe'" in capsys.readouterr().err
