"""The flow families' VAE decoder kernels begun before the first transformer step
(FlowModel.begin_decode, diffusion.pipelines.sd.decode_ahead), on a device that builds in the
background: the decode run once under gpucore.begin_only after the prompt is encoded, on
latents of the sampler's shape; once per size; the same picture bytes. A device that builds in
place (lavapipe's) does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")

import gpucore
from diffusion.pipelines.flow import flow_model, flow_passes
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.request import GenerationRequest
from diffusion.pipelines.sd import decode_ahead


def test_the_decoders_kernels_are_begun_before_the_first_step(
        first_device: gpucore.Device, tiny_flux_dev: tuple[Path, Any],
        monkeypatch: pytest.MonkeyPatch, short_prompts: None) -> None:
    monkeypatch.setattr(decode_ahead, "_begun", type(decode_ahead._begun)())
    events: list[tuple[str, Any]] = []
    real_decode, real_sample = flow_model.FlowModel.decode, flow_passes.sample_flow

    def decode(self: Any, latents: np.ndarray, request: GenerationRequest) -> Any:
        begun = gpucore._kernel._begin_only.get() is first_device
        events.append(("begun" if begun else "decode", latents.shape))
        return real_decode(self, latents, request)

    def sample(*args: Any, **kwargs: Any) -> Any:
        events.append(("steps", None))
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(flow_model.FlowModel, "decode", decode)
    monkeypatch.setattr(flow_passes, "sample_flow", sample)
    request = GenerationRequest(prompt="a red circle", width=24, height=16, steps=2, seed=3,
                                sampler="Euler", cfg_scale=1.0)
    model = load_pipeline(tiny_flux_dev[0] / "flux", device=first_device)
    expected = model.generate(request).images[0]
    shape = events[-1][1]  # the sampler's latents, (1, channels, h, w)
    assert len(shape) == 4 and shape[0] == 1
    assert first_device.builds_later or events == [("steps", None), ("decode", shape)]

    monkeypatch.setattr(first_device, "builds_later", True)
    events.clear()
    model = load_pipeline(tiny_flux_dev[0] / "flux", device=first_device)
    for _ in range(2):
        np.testing.assert_array_equal(np.asarray(model.generate(request).images[0]),
                                      np.asarray(expected))
    assert events == [("begun", shape), ("steps", None), ("decode", shape),
                      ("steps", None), ("decode", shape)], "not begun before the first step"
