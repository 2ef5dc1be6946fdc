"""`python -m diffusion`'s device opened ahead: which command lines begin opening it before the
CLI's imports (a GPU command on the default device only), and that the package's exports are
imported on first use, so __main__ runs before the pipelines' imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import checkout_env

from diffusion.cli.ahead import wants_default_device

pytestmark = pytest.mark.nodevice


@pytest.mark.parametrize("argv", [
    ["txt2img", "--prompt", "a fox", "--fp16"],
    ["img2img", "--init-image", "a.png", "--prompt", "x", "--seed", "-1"],
    ["inpaint", "--batch-size", "2", "--base", "b"],  # --ba... is not --backend
    ["txt2vid", "--prompt", "a fox"],
])
def test_gpu_commands_on_the_default_device_open_it_ahead(argv):
    assert wants_default_device(argv)


@pytest.mark.parametrize("argv", [
    [], ["serve"], ["png-info", "a.png"], ["cache"], ["quantize", "a", "b"],
    ["txt2img", "--backend", "gl", "--prompt", "x"],
    ["txt2img", "--backend=vulkan"], ["txt2img", "--back", "gl"],  # argparse's abbreviations
    ["txt2img", "--adapter", "1"], ["txt2img", "--ad=1"],
    ["txt2img", "--help"], ["txt2img", "-h"], ["txt2img", "--he"], ["txt2img", "--"],
])
def test_other_command_lines_leave_the_device_alone(argv):
    assert not wants_default_device(argv)


_SCRIPT = """
import json, sys
import diffusion
before = sorted(m for m in sys.modules if m.startswith("diffusion."))
pipe_class = diffusion.StableDiffusion
print(json.dumps({"before": before, "name": pipe_class.__name__,
                  "after": "diffusion.pipelines.sd.stable_diffusion" in sys.modules,
                  "dir": "load_pipeline" in dir(diffusion)}))
"""


def test_package_exports_are_imported_on_first_use():
    done = subprocess.run([sys.executable, "-c", _SCRIPT], env=checkout_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["before"] == []  # `import diffusion` alone imports no pipeline
    assert seen["name"] == "StableDiffusion" and seen["after"] and seen["dir"]
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        __import__("diffusion").nothing_here  # noqa: B018
