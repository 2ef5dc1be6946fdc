"""A txt2img's start imports only what a picture needs: the CLI's parser and the SD pipeline's
load path bring in no server, video-page, face or detection code and none of the heavy
optional libraries (each of which costs a cold process tenths of a second or more), so a
second cold process is not paying for them. Checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import checkout_env

pytestmark = pytest.mark.nodevice

# Imported later where needed (the server by `serve`, PIL by the PNG writer, torch nowhere at
# run time): none of them may come with the CLI's start.
NOT_AT_START = ["fastapi", "uvicorn", "starlette", "pydantic", "scipy", "torch", "cv2", "PIL",
                "onnxruntime", "ultralytics", "safetensors", "transformers", "diffusers",
                "huggingface_hub", "ray", "dask", "gguf", "diffusion.server",
                "diffusion.detection", "diffusion.faces", "diffusion.interrogate"]

_SCRIPT = """
import json, sys
from diffusion.cli.main import build_parser
build_parser().parse_args(["txt2img", "--prompt", "a red circle", "--fp16"])
import diffusion.infotext, diffusion.loaders.reading, diffusion.pipelines.sd.unet_load
print(json.dumps(sorted(sys.modules)))
"""


def test_txt2img_start_imports_none_of_the_heavy_modules() -> None:
    done = subprocess.run([sys.executable, "-c", _SCRIPT], env=checkout_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "diffusion.pipelines.sd.unet_load" in loaded  # the check sees what was imported
    found = sorted({name for name in loaded for heavy in NOT_AT_START
                    if name == heavy or name.startswith(heavy + ".")})
    assert not found, f"txt2img's start imports {found}: import them where they are used"
