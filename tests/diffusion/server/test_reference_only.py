"""reference_only through the server, as the WebUI's client sends it: a `webuiapi`
ControlNetUnit with module "reference_only" and no model steers a tiny SD 1.5's picture (the
reference picture, its style fidelity and its weight each change it; weight 0 is the plain
picture), the infotext writes the unit, and `/controlnet/module_list` lists the module with
its Style Fidelity slider; reference_adain and reference_adain+attn each change it, each
differently."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")
webuiapi = pytest.importorskip("webuiapi", reason="the WebUI's client (extra: test)")

from control_tiny import circle  # noqa: E402
from PIL import Image  # noqa: E402
from sd_tiny import VAE_TINY, randomized, write_pipeline  # noqa: E402
from server_support import CachedLoader, live_server  # noqa: E402

import gpucore  # noqa: E402
from diffusion.server import create_app  # noqa: E402

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import diffusers

    root = tmp_path_factory.mktemp("reference-server")
    # latents about as large as the noise (the tiny VAE's are ~0.1 at SD's 0.18215), so the
    # noised reference is more than its noise
    vae = randomized(diffusers.AutoencoderKL(**VAE_TINY, scaling_factor=10.0), 2)
    app = create_app(model=write_pipeline(root / "tiny-sd", vae=vae),
                     outputs=root / "outputs", loader=CachedLoader())
    with live_server(app) as url:
        where = urlparse(url)
        yield webuiapi.WebUIApi(host=where.hostname, port=where.port)


def test_reference_only_unit_through_webuiapi(api: Any) -> None:
    modules = api.controlnet_module_list()
    assert {"reference_only", "reference_adain", "reference_adain+attn"} <= set(modules)
    settings = dict(prompt="a red circle on a blue background", steps=1, width=40, height=24,
                    seed=3, cfg_scale=5, sampler_name="Euler")
    first = Image.fromarray(circle(48, 80))
    second = Image.fromarray(255 - circle(48, 80, seed=5))

    def picture(image: Any = first, module: str = "reference_only", **unit: Any
                ) -> tuple[np.ndarray, str]:
        units = [] if image is None else [webuiapi.ControlNetUnit(
            image=image, module=module, model="None", **unit)]
        # webuiapi keeps units in its mutable default alwayson_scripts: a dict of its own
        result = api.txt2img(controlnet_units=units, alwayson_scripts={}, **settings)
        return np.asarray(result.image, np.float64) / 255, result.info["infotexts"][0]

    plain, _ = picture(None)
    guided, info = picture()
    assert 'ControlNet 0: "Module: reference_only, Model: None, Weight: 1.0' in info
    assert "Threshold A: 0.5" in info  # the style fidelity slider's default
    assert np.abs(guided - plain).mean() > 0.01
    other = picture(second)[0]
    assert np.abs(other - guided).mean() > 0.01  # the reference matters
    assert np.abs(picture(threshold_a=0.0)[0] - guided).mean() > 0.005
    assert np.abs(picture(weight=0.0)[0] - plain).max() <= 1 / 255

    # reference_adain renormalizes the UNet's block outputs to the reference's statistics;
    # +attn does that and reference_only's attention
    adain, info = picture(module="reference_adain")
    assert 'ControlNet 0: "Module: reference_adain, Model: None, Weight: 1.0' in info
    both = picture(module="reference_adain+attn")[0]
    assert np.abs(adain - plain).mean() > 0.01
    assert np.abs(both - adain).mean() > 0.005 and np.abs(both - guided).mean() > 0.005
