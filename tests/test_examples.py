"""Every script in examples/ runs and verifies its own result (small sizes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

import gpucore

EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_runs(script: str, tmp_path: Path) -> None:
    if not gpucore.devices():
        pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)")
    env = {**os.environ, "AVX_EXAMPLE_SMALL": "1", "AVX_EXAMPLE_OUT": str(tmp_path)}
    args: list[str] = []
    if script == "txt2img.py":  # give it a tiny random model to run end to end
        pytest.importorskip("diffusers", reason="the tiny test model is built with diffusers")
        from sd_tiny import write_pipeline

        env["AVX_MODEL"] = str(write_pipeline(tmp_path / "tiny-sd"))
        args = ["--steps", "2", "--size", "32"]  # the tiny VAE's 16x16 latents; end to end
    result = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{script} printed nothing"
