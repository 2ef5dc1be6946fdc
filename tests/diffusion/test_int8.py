"""`--int8` (diffusion.pipelines.int8): the bundled model's picture with its UNet's linear
layers W8A8 against the same picture in float16 (a stated tolerance, and a visible change:
the int8 path ran), the infotext's field, the CLI and server options, the refusal of a
pipeline without the mode."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import host_variant_on_first_adapter

import diffusion
import gpucore
from diffusion.cli.main import build_parser
from diffusion.infotext import format_infotext
from diffusion.models.int8 import targets
from diffusion.pipelines.int8 import use_int8
from diffusion.server.jobs.loader import PipelineLoader
from diffusion.server.settings import ServerSettings


def test_bundled_picture_under_int8_stays_near_float(device: gpucore.Device) -> None:
    """In the model's own dtype ("auto": float32 on CI's adapters, whose float16 kernels
    would be a minute's compile more; float16 on a GPU under Dawn)."""
    host_variant_on_first_adapter(device, "the int8 picture")
    pipe = diffusion.load_pipeline(dtype="auto", device=device)
    settings = dict(steps=2, seed=3, width=64, height=64)
    want = pipe.generate("a red circle on a blue square", **settings)
    layers = len(targets(pipe.unet))
    note = use_int8(pipe)
    assert note.startswith(f"int8: {layers} linear layers of the UNet run W8A8")
    assert layers > 20 and not targets(pipe.unet)  # every target now holds int8 weights
    got = pipe.generate("a red circle on a blue square", **settings)
    a, b = (r.images[0].astype(np.float64) for r in (want, got))
    diff = np.abs(a - b)
    psnr = 10 * np.log10(255 ** 2 / (diff ** 2).mean())
    # int8 changes the picture visibly, but little (lavapipe, float32: see the assertion's
    # message for the figures)
    assert diff.mean() > 0.1 and diff.mean() < 8 and psnr > 22, (diff.mean(), psnr)
    assert got.settings["int8"] == "W8A8" and "int8" not in want.settings
    assert "Int8: W8A8" in format_infotext(got.settings)
    assert use_int8(pipe).startswith("int8: 0 linear layers")  # once only
    with pytest.raises(ValueError, match="LoRAs do not apply to int8 layers"):
        pipe.generate("a red circle <lora:detail:0.5>", **settings)


@pytest.mark.nodevice
def test_options_and_refusal() -> None:
    parser = build_parser()
    assert parser.parse_args(["txt2img", "--prompt", "a cat", "--int8"]).int8
    assert not parser.parse_args(["txt2img", "--prompt", "a cat"]).int8
    assert parser.parse_args(["serve", "--int8"]).int8
    with pytest.raises(ValueError, match="wan models have no W8A8 mode"):
        use_int8(SimpleNamespace(family="wan"))
    # the server's loader applies the setting to every pipeline it loads
    loader = PipelineLoader(ServerSettings(int8=True),
                            build=lambda path, **where: SimpleNamespace(family="wan"))
    with pytest.raises(ValueError, match="wan models have no W8A8 mode"):
        loader(Path("model"))
    assert PipelineLoader(ServerSettings(), build=lambda path, **where: "as loaded")(
        Path("model")) == "as loaded"
