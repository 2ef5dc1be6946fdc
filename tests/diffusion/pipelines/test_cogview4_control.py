"""CogView4-6B-Control (the map's VAE latents concatenated to the latents' channels) against
diffusers' CogView4ControlPipeline on a tiny random control transformer: the map's posterior
draw from torch's global generator (seeded as the noise's), the map visibly mattering, and a
missing map refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cogview4_tiny import tiny_cogview4_control
from PIL import Image

import gpucore
from diffusion.loaders.cogview4 import cogview4_family
from diffusion.pipelines.flow.cogview4 import CogView4Pipeline

HEIGHT, WIDTH = 32, 48
RED = "a red circle on a blue square"


def test_control_is_diffusers(first_device: gpucore.Device, tiny_cogview4: tuple[Path, Any],
                              tmp_path: Path) -> None:
    """CFG 4 with a negative prompt: CogView4ControlPipeline's picture after
    torch.manual_seed(seed); the inverted map another; no map, and a map for CogView4-6B,
    one line each."""
    folder, base = tiny_cogview4
    reference = tiny_cogview4_control(tmp_path, base)
    control = np.random.default_rng(4).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    settings = dict(height=HEIGHT, width=WIDTH, num_inference_steps=2, guidance_scale=4.0,
                    negative_prompt="blurry")
    torch.manual_seed(7)  # the map's posterior draw: torch's global generator
    with torch.no_grad():
        expected = reference(RED, control_image=Image.fromarray(control), output_type="np",
                             generator=torch.Generator().manual_seed(7), **settings).images[0]
    assert cogview4_family(tmp_path / "cogview4-control") == "cogview4"
    pipe = CogView4Pipeline.from_pretrained(tmp_path / "cogview4-control", device=first_device)
    got = pipe(RED, control_image=control, seed=7, **settings)[0]
    np.testing.assert_allclose(got, expected, atol=5e-5)
    inverted = pipe(RED, control_image=255 - control, seed=7, **settings)[0]
    assert np.abs(inverted - got).mean() > 0.01  # the map matters
    with pytest.raises(ValueError, match="needs its control image"):
        pipe(RED, seed=7, **settings)
    plain = CogView4Pipeline.from_pretrained(folder, device=first_device)
    with pytest.raises(ValueError, match="takes no control image"):
        plain(RED, control_image=control, seed=7, **settings)


@pytest.mark.nodevice
def test_capabilities_before_load(tiny_cogview4: tuple[Path, Any], tmp_path: Path) -> None:
    """The registry reads the control folder's transformer config: it asks for the map,
    CogView4-6B does not; both in CogView4's own latent space (its VAE is not FLUX.1's), which
    has no TAESD."""
    from diffusion.pipelines.families import capabilities_of
    from diffusion.server.previews import taesd_name

    folder, base = tiny_cogview4
    tiny_cogview4_control(tmp_path, base)
    control, plain = capabilities_of(tmp_path / "cogview4-control"), capabilities_of(folder)
    assert control is not None and plain is not None
    assert control.control_map and not plain.control_map
    assert control.latent_space == plain.latent_space == "cogview4"
    assert taesd_name("cogview4") is None
