"""Every script in examples/ runs and verifies its own result (small sizes), once, here.

Each exits non-zero when its GPU result disagrees with its reference; beyond that, each must
print (and write) what its docstring promises.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import checkout_env
from support import ROOT

import gpucore

EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))

# what each script's output must contain, and the files it must write under out/ (its default
# --out, relative to the working directory)
PRINTS = {"fft.py": ("tones found",), "image_filter.py": ("device",),
          "matmul.py": ("GFLOP/s", "relative error")}
WRITES = {"image_filter.py": ("out/image_filter", ["blur.png", "edges.png", "input.png",
                                                   "resized.png"])}


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_runs(script: str, tmp_path: Path) -> None:
    if not gpucore.devices():
        pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)")
    env = {**checkout_env(), "AVX_EXAMPLE_SMALL": "1", "AVX_EXAMPLE_OUT": str(tmp_path)}
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
    for needle in PRINTS.get(script, ()):
        assert needle in result.stdout, f"{script} did not print {needle!r}:\n{result.stdout}"
    if script in WRITES:
        folder, names = WRITES[script]
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == names
