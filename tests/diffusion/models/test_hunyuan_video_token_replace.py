"""HunyuanVideo-I2V's token_replace transformer against diffusers'
HunyuanVideoTransformer3DModel(image_condition_type="token_replace") on torch CPU
(tests/hunyuan_video_tiny.py's tiny random model): the first latent frame's tokens modulated
at timestep 0, a batch of two prompts of 7 and 4 of 9 tokens, float32; the first frame's own
modulation visibly matters (the same weights as plain blocks differ)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
from hunyuan_video_tiny import tiny_hunyuan_video_transformer
from sd_tiny import ported, state_dict
from support import assert_close
from test_hunyuan_video_transformer import _differs, _inputs, _ours, _reference

import gpucore
from diffusion.models.hunyuan_video import HunyuanVideoTransformer3DModel

TOL = 1e-5  # float32 rounding of the two sides: measured 5.7e-6 of the largest value


def test_hunyuan_video_token_replace_equals_diffusers(device: gpucore.Device) -> None:
    """diffusers' velocity (a timestep per sample); without the first frame's own
    modulation (the plain blocks of the same weights) the velocity visibly differs, in the
    first frame and, through attention, in the others."""
    reference = tiny_hunyuan_video_transformer(image_condition_type="token_replace")
    ours = ported(HunyuanVideoTransformer3DModel, reference, device)
    inputs = {**_inputs(7), "timestep": np.array([900.0, 250.0], np.float32)}
    got = _ours(ours, inputs)
    assert_close(got, _reference(reference, inputs), tol=TOL)
    config = {k: v for k, v in reference.config.items() if k != "image_condition_type"}
    plain = HunyuanVideoTransformer3DModel(config, device=device)
    plain.load_state_dict(state_dict(reference))
    other = _ours(plain, inputs)
    assert _differs(got[:, :, :1], other[:, :, :1], 0.05)  # measured 7.5%
    assert _differs(got[:, :, 1:], other[:, :, 1:], 0.02)  # measured 3.3%
