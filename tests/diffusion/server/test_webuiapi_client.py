"""The WebUI's own Python client (webuiapi) against the real server over HTTP: the Extras tab's
`extra_single_image` and a hires fix with "R-ESRGAN 4x+", a tiny random RRDBNet saved the way
Real-ESRGAN releases RealESRGAN_x4plus.pth, found through --upscaler-dir's folder."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("uvicorn", reason="server extra (pip install .[server])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")
webuiapi = pytest.importorskip("webuiapi", reason="the WebUI's client (extra: test)")
torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")

from PIL import Image  # noqa: E402
from server_support import CachedLoader, live_server  # noqa: E402
from upscaler_files import write_x4plus  # noqa: E402

import gpucore  # noqa: E402
from diffusion.server import create_app  # noqa: E402
from diffusion.upscalers import models  # noqa: E402

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from sd_tiny import write_pipeline

    root = tmp_path_factory.mktemp("webuiapi")
    model = write_pipeline(root / "tiny")
    write_x4plus(root / "models")
    before = dict(models.MODEL_UPSCALERS)  # the process-wide registry, restored after
    models.MODEL_UPSCALERS.clear()
    try:
        assert models.register_upscaler_dir(root / "models") == ["R-ESRGAN 4x+"]
        models.MODEL_UPSCALERS["R-ESRGAN 4x+"].dtype = np.float32  # lavapipe: f32 conv kernels
        app = create_app(model=model, loader=CachedLoader(), outputs=root / "outputs")
        with live_server(app) as base:
            host, port = base.removeprefix("http://").split(":")
            yield webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler a", steps=1)
            app.state.worker.stop()
    finally:
        models.MODEL_UPSCALERS.clear()
        models.MODEL_UPSCALERS.update(before)


def test_extra_single_image(api: Any) -> None:
    rng = np.random.default_rng(2)
    picture = Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    names = [item["name"] for item in api.get_upscalers()]
    assert names[-1] == "R-ESRGAN 4x+" and names[:3] == ["None", "Lanczos", "Nearest"]
    result = api.extra_single_image(image=picture, upscaler_1="R-ESRGAN 4x+",
                                    upscaling_resize=2)
    # the network's 4x, then Lanczos down to 2x (48x40), as the WebUI's Upscaler.upscale
    want = models.MODEL_UPSCALERS["R-ESRGAN 4x+"].upscale(np.asarray(picture), 2)
    assert result.image.size == (48, 40)
    np.testing.assert_array_equal(np.asarray(result.image.convert("RGB")), want)
    assert "Postprocess upscaler: R-ESRGAN 4x+" in result.info


def test_txt2img_hires_fix_with_r_esrgan(api: Any) -> None:
    result = api.txt2img(prompt="a red circle", seed=5, width=32, height=32, cfg_scale=3,
                         enable_hr=True, hr_scale=1.5, hr_upscaler="R-ESRGAN 4x+",
                         hr_second_pass_steps=1, denoising_strength=0.5)
    assert result.image.size == (48, 48)
    assert result.info["infotexts"][0].endswith("Hires upscaler: R-ESRGAN 4x+")
    assert result.parameters["hr_upscaler"] == "R-ESRGAN 4x+"
    # an unknown name is the server's 4xx naming the known ones, which webuiapi raises
    with pytest.raises(RuntimeError, match="R-ESRGAN 4x\\+"):
        api.txt2img(prompt="a", width=32, height=32, enable_hr=True, hr_upscaler="4x-Nope")
