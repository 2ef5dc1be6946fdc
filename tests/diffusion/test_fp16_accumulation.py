"""`--fp16-accumulation`: the denoiser's f16 GEMMs accumulate in f16 while it runs (and
nothing else's), the infotext says so, the CLI and the server take it; on a GPU with f16
result matrices the picture moves, a little."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import host_variant_on_first_adapter

import diffusion
import gpucore
from diffusion.cli.main import build_parser
from diffusion.infotext import format_infotext
from diffusion.pipelines.contract import Denoisers, Placement
from diffusion.pipelines.fp16_accumulation import use_fp16_accumulation
from diffusion.server.jobs.loader import PipelineLoader
from diffusion.server.settings import ServerSettings
from gpustd.gemm import accumulate, matrix_units

SETTINGS = dict(steps=2, seed=3, width=64, height=64)


def _spy(monkeypatch: pytest.MonkeyPatch, network: Any, seen: list[str | None]) -> None:
    """Record what `network`'s calls would accumulate their f16 GEMMs in."""
    forward = network.forward

    def spied(*args: Any, **kwargs: Any) -> Any:
        seen.append(accumulate.requested())
        return forward(*args, **kwargs)

    monkeypatch.setattr(network, "forward", spied)


def test_the_denoiser_alone_accumulates_in_f16(device: gpucore.Device,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The UNet's calls run inside an f16 block, the text encoder's and the VAE's outside
    any; the infotext carries the field; the note says why it has no effect in float32."""
    host_variant_on_first_adapter(device, "the accumulation's scope")
    pipe = diffusion.load_pipeline(dtype="float32", device=device)
    unet, text, vae = [], [], []
    _spy(monkeypatch, pipe.unet, unet)
    _spy(monkeypatch, pipe.text_encoder, text)
    _spy(monkeypatch, pipe.vae.decoder, vae)
    plain = pipe.generate("a red circle", **SETTINGS)
    assert "fp16_accumulation" not in plain.settings and unet and set(unet) == {None}
    note = use_fp16_accumulation(pipe)
    assert note == ("fp16 accumulation: the UNet runs float32, so it has no float16 GEMMs; "
                    "use --fp16 (or --dtype float16) for it to apply")
    unet.clear(), text.clear(), vae.clear()
    got = pipe.generate("a red circle", **SETTINGS)
    assert unet and set(unet) == {"f16"} and set(text) == {None} and set(vae) == {None}
    assert got.settings["fp16_accumulation"] is True
    assert "FP16 accumulation: True" in format_infotext(got.settings)
    assert np.array_equal(got.images[0], plain.images[0])  # float32: nothing to change


def test_the_picture_moves_a_little_on_f16_result_matrices(device: gpucore.Device) -> None:
    """The bundled model in float16 on a GPU that sums f16 fragments into f16 (Dawn on
    NVIDIA): another picture than f32 sums give, within a few levels."""
    if not (device.has_f16 and matrix_units.available(device)
            and accumulate.f16_available(device)) or device.info.type == "cpu":
        pytest.skip(f"{device.info.label} has no f16 result matrices (Dawn on a GPU has)")
    pipe = diffusion.load_pipeline(dtype="float16", device=device)
    want = pipe.generate("a red circle on a blue square", **SETTINGS).images[0]
    assert use_fp16_accumulation(pipe) == ("fp16 accumulation: the UNet's float16 GEMMs "
                                           "accumulate in float16")
    got = pipe.generate("a red circle on a blue square", **SETTINGS).images[0]
    diff = np.abs(got.astype(np.float64) - want)
    assert diff.max() > 0 and diff.mean() < 2, (diff.max(), diff.mean())


@pytest.mark.nodevice
def test_options_and_refusal() -> None:
    parser = build_parser()
    for command in (["txt2img", "--prompt", "a cat"], ["serve"],
                    ["txt2vid", "--model", "wan", "--prompt", "a cat"]):
        assert parser.parse_args([*command, "--fp16-accumulation"]).fp16_accumulation
        assert not parser.parse_args(command).fp16_accumulation
    # the server's loader applies the setting to every pipeline it loads, to its denoisers
    experts = [SimpleNamespace(gemm_accumulate=None) for _ in range(2)]
    pipe = SimpleNamespace(denoisers=Denoisers(tuple(experts), "transformer"),
                           placement=Placement(None, np.float32))
    loader = PipelineLoader(ServerSettings(fp16_accumulation=True),
                            build=lambda path, **where: pipe)
    assert loader(Path("model")) is pipe
    assert [e.gemm_accumulate for e in experts] == ["f16", "f16"]
