"""Step caching from the doors: `--cache` on the command line (diffusers' cached FluxPipeline's
picture with the "diffusers" sampler, the infotext's "Cache" field with the steps computed,
read back by --from-infotext), the server's `cache` body key, and the one-line refusal of a
family or kind without it."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_ok, png_levels
from diffusers.hooks import FirstBlockCacheConfig

import diffusion.cli.main as cli
import gpucore
from diffusion.infotext import parse_infotext, read_infotext
from diffusion.pipelines.contract import Capabilities
from diffusion.pipelines.flow.flow_model import FlowModel
from diffusion.pipelines.flow.z_image_model import ZIMAGE_DEFAULTS, ZImageModel
from diffusion.pipelines.request import GenerationRequest
from diffusion.server.api.generation import RequestError, build_job
from diffusion.server.api.schemas import Txt2ImgRequest

pytestmark = pytest.mark.usefixtures("short_prompts")  # 16 T5 tokens (flow_fixtures.py)

SIZE = ("--width", "24", "--height", "16")
STEPS = 6


def test_cache_from_the_cli(first_device: gpucore.Device, tiny_flux_dev: tuple[Path, Any],
                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, reference = tiny_flux_dev
    base = ("txt2img", "--model", str(root / "flux"), "--prompt", "a red circle", *SIZE,
            "--steps", str(STEPS), "--seed", "7", "--dtype", "float32")
    # 1. "diffusers": the picture of diffusers' FluxPipeline with First Block Cache
    threshold = 0.2
    cached = cli_ok(capsys, *base, "--sampler", "diffusers", "--rng", "torch",
                    "--cache", f"fbc:{threshold}", "--out", str(tmp_path / "cached.png"))[0]
    reference.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        expected = reference("a red circle", height=16, width=24,
                             num_inference_steps=STEPS, guidance_scale=3.5,
                             max_sequence_length=16, generator=torch.Generator().manual_seed(7),
                             output_type="np").images
    finally:
        reference.transformer.disable_cache()
    assert np.abs(png_levels(cached) - np.round(expected[0] * 255)).max() <= 1
    text = read_infotext(cached) or ""
    computed = re.search(rf'Cache: "fbc {threshold}, (\d+)/{STEPS} steps computed"', text)
    assert computed is not None, text
    assert 1 <= int(computed.group(1)) < STEPS  # some steps skipped
    plain = cli_ok(capsys, *base, "--sampler", "diffusers", "--rng", "torch",
                   "--out", str(tmp_path / "plain.png"))[0]
    assert np.abs(png_levels(plain) - png_levels(cached)).max() > 2  # the cache visibly acted
    assert "Cache" not in (read_infotext(plain) or "")
    # 2. a WebUI sampler, MagCache; --from-infotext takes the cache setting back
    magcache = cli_ok(capsys, *base, "--cache", "magcache", "--out", str(tmp_path / "mag.png"))[0]
    text = read_infotext(magcache) or ""
    assert re.search(rf'Cache: "magcache 0.06, \d+/{STEPS} steps computed"', text), text
    again = cli_ok(capsys, "txt2img", "--model", str(root / "flux"), "--from-infotext", magcache,
                   "--dtype", "float32", "--out", str(tmp_path / "again.png"))[0]
    assert np.array_equal(png_levels(again), png_levels(magcache))
    assert parse_infotext(read_infotext(again) or "")["cache"].startswith("magcache 0.06,")


def test_cache_refusals_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    unet = Capabilities(family="sdxl", latent_space="sdxl")
    with pytest.raises(ValueError, match=r"^step cache fbc: not supported for sdxl models; "
                                         r"leave --cache out$"):
        unet.refuse(GenerationRequest(cache="fbc:0.1"))
    sd3 = Capabilities(family="sd3", latent_space="sd3", step_cache=("fbc",))
    with pytest.raises(ValueError, match=r"magcache: not supported .* it runs fbc"):
        sd3.refuse(GenerationRequest(cache="magcache"))
    sd3.refuse(GenerationRequest(cache="fbc"))
    pipe = SimpleNamespace(transformer=SimpleNamespace(config={}))
    chroma = FlowModel(pipe, family="chroma").capabilities
    assert chroma.step_cache == ("fbc",)
    with pytest.raises(ValueError, match=r"teacache: not supported .* it runs fbc"):
        chroma.refuse(GenerationRequest(cache="teacache", cfg_scale=5))
    chroma.refuse(GenerationRequest(cache="fbc", cfg_scale=5))
    zimage = ZImageModel(pipe, family="z-image", defaults=ZIMAGE_DEFAULTS).capabilities
    assert zimage.step_cache == ("fbc",)
    with pytest.raises(ValueError, match=r"magcache: not supported .* it runs fbc"):
        zimage.refuse(GenerationRequest(cache="magcache"))
    flux = FlowModel(pipe, family="flux-schnell").capabilities
    assert flux.step_cache == ("fbc", "magcache", "teacache")
    with pytest.raises(ValueError, match="not one of fbc"):
        GenerationRequest(cache="deepcache:0.4")
    code = cli.main(["txt2img", "--prompt", "x", "--cache", "fbc:nine"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "Traceback" not in err
    assert err.splitlines()[-1] == "error: cache threshold 'nine' is not a number; e.g. fbc:0.12"


def test_cache_from_the_server_body(tmp_path: Path) -> None:
    def job(body: dict[str, Any]) -> Any:
        options = {"CLIP_stop_at_last_layers": 1, "randn_source": "GPU"}
        return build_job(Txt2ImgRequest.model_validate(body), "txt2img", options=options,
                         max_size=2048, outputs=tmp_path)[0]

    assert job({"prompt": "x", "cache": "fbc:0.08"}).request.cache == "fbc:0.08"
    assert job({"prompt": "x"}).request.cache is None
    with pytest.raises(RequestError, match="cache 'tea' is not one of"):
        job({"prompt": "x", "cache": "tea"})
