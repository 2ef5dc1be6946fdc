"""NaN or infinity out of a network is an error that says which network and what to change
(the WebUI's NaN check), never a black picture: generate() checks the final latents, every
family's decode its pictures before they become uint8."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import host_variant_on_first_adapter

import diffusion
import gpucore
from diffusion.pipelines.contract import Denoisers
from diffusion.pipelines.finite import (
    NonFiniteError,
    check_finite,
    check_latents,
    pictures_uint8,
)
from diffusion.pipelines.vae_float32 import use_float32_vae

SETTINGS = dict(steps=2, seed=3, width=64, height=64)


def test_check_finite_names_the_network_the_kind_and_the_share() -> None:
    values = np.random.default_rng(0).standard_normal((2, 4, 9, 7)).astype(np.float32)
    check_finite(values, "the UNet", "run in float32")  # finite: nothing said
    values[0, 1, 2, 3] = np.nan
    with pytest.raises(NonFiniteError, match=r"^the UNet gave NaN in 0\.2% of its values, so "
                                             r"the picture would be black or noise: run in "
                                             r"float32$"):
        check_finite(values, "the UNet", "run in float32")
    values[1, 0, 0, 0] = -np.inf
    with pytest.raises(NonFiniteError, match=r"gave NaN and infinity in 0\.4% "):
        check_finite(values, "the UNet", "run in float32")
    assert issubclass(NonFiniteError, ValueError)  # one line on the CLI, a 422 on the server


def _network(dtype: Any, accumulate: str | None = None) -> Any:
    weight = SimpleNamespace(dtype=np.dtype(dtype))
    return SimpleNamespace(parameters=lambda: iter([weight]), gemm_accumulate=accumulate)


@pytest.mark.parametrize(("pipe", "remedy"), [
    (SimpleNamespace(denoisers=Denoisers((_network(np.float16, "f16"),), "transformer")),
     "the transformer gave NaN .*: leave out --fp16-accumulation \\(float16 sums\\); or run "
     "in float32 \\(--dtype float32; the server's --dtype\\), where float16 overflowed$"),
    (SimpleNamespace(denoisers=Denoisers((_network(np.float16),), "UNet")),
     "the UNet gave NaN .*: run in float32 \\(--dtype float32; the server's --dtype\\), "
     "where float16 overflowed$"),
    (SimpleNamespace(denoisers=Denoisers((_network(np.float32),), "UNet")),
     "the UNet gave NaN .*: the weights themselves may hold NaN or infinity \\(check the "
     "model file\\)$"),
])
def test_the_remedy_names_the_settings_that_overflow(pipe: Any, remedy: str) -> None:
    latents = np.ones((1, 4, 8, 8), np.float32)
    check_latents(latents, pipe)
    latents[0, 0, 0, 0] = np.nan
    with pytest.raises(NonFiniteError, match=remedy):
        check_latents(latents, pipe)


def test_pictures_keep_their_bits_and_nan_is_refused() -> None:
    """The conversions it replaced: SD's clip(x / 2 + 0.5) of [-1, 1] pictures, the flow
    families' round(p * 255) of [0, 1] ones (their decode clipped already)."""
    rng = np.random.default_rng(1)
    sd = rng.uniform(-1.2, 1.2, (2, 3, 13, 11)).astype(np.float32)
    old = [np.round(p * 255).astype(np.uint8)
           for p in np.clip(sd / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)]
    new = pictures_uint8((image / 2 + 0.5).transpose(1, 2, 0) for image in sd)
    assert all(np.array_equal(a, b) for a, b in zip(old, new, strict=True))
    flow = rng.uniform(0, 1, (2, 13, 11, 3)).astype(np.float32)
    assert all(np.array_equal(np.round(p * 255).astype(np.uint8), q)
               for p, q in zip(flow, pictures_uint8(flow), strict=True))
    flow[1, 5, 5, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"^the VAE's decode gave NaN"):
        pictures_uint8(flow)


def _poisoned(monkeypatch: pytest.MonkeyPatch, network: Any) -> None:
    """`network`'s output times NaN from its first call on, as an overflow spreads."""
    forward = network.forward
    monkeypatch.setattr(network, "forward",
                        lambda *args, **kwargs: forward(*args, **kwargs) * float("nan"))


@pytest.mark.parametrize("network", ["unet", "vae"])
def test_a_pipeline_refuses_nan_from_its_unet_or_vae(device: gpucore.Device, network: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled model with its UNet's (or VAE decoder's) output poisoned: generate raises
    the error that names it, where it used to save a black picture (the VAE float32 already:
    no revert)."""
    host_variant_on_first_adapter(device, "the NaN checks")
    pipe = diffusion.load_pipeline(dtype="float32", device=device)
    _poisoned(monkeypatch, pipe.unet if network == "unet" else pipe.vae.decoder)
    said = ("^the UNet gave NaN in 100.0% of its values, .*: the weights themselves may hold "
            if network == "unet" else "^the VAE's decode gave NaN in 100.0% of its values, .*: "
            r"the model's VAE \(.+\) runs in float32 already, so the latents or that VAE's weights "
            "hold the fault")
    with pytest.raises(NonFiniteError, match=said):
        pipe.generate("a red circle", **SETTINGS)
    if network == "vae":  # nothing to revert (diffusion.pipelines.vae_float32)
        assert use_float32_vae(pipe) == "no-half-vae: the VAE runs in float32 already"


def test_the_server_answers_nan_with_the_line_not_a_500(device: gpucore.Device,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The WebUI API a 422 and OpenAI's images API a 400 (its shape), each with the message."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from fastapi.testclient import TestClient

    from diffusion.server import create_app

    host_variant_on_first_adapter(device, "the NaN checks")
    pipe = diffusion.load_pipeline(dtype="float32", device=device)
    _poisoned(monkeypatch, pipe.unet)
    app = create_app(model=diffusion.default_model_path(), loader=lambda path, **_: pipe)
    try:
        with TestClient(app) as client:
            webui = client.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "steps": 2,
                                                           "width": 64, "height": 64})
            openai = client.post("/v1/images/generations", json={
                "prompt": "a red circle", "size": "64x64", "steps": 2})
    finally:
        app.state.worker.stop()
    assert webui.status_code == 422 and "the UNet gave NaN" in webui.json()["detail"]
    assert openai.status_code == 400
    assert "the UNet gave NaN" in openai.json()["error"]["message"]
