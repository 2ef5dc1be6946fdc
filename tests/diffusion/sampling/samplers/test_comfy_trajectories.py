"""The samplers only ComfyUI has, step by step against ComfyUI's own implementation.

tests/data/comfy_trajectories.npz holds what ComfyUI's `comfy/k_diffusion/sampling.py` (its
commit is in the file) did on a batch of 2 small latents in torch float64: every model call (the
x and sigma it was given, the guided x0 and, for CFG++, the unconditional x0 it got back), every
noise draw and the result. `tools/record_comfy_trajectories.py` records it from a ComfyUI
checkout; CI only replays it.

Replaying: our sampler gets a model that answers call k with ComfyUI's recorded x0 after checking
that it was asked at ComfyUI's sigma and at ComfyUI's x (so every step's state is compared,
and one step's error cannot hide behind the next), and a noise source that hands out ComfyUI's
draws in order after checking their sigma pair. Float64 on both sides: the worst relative
difference of any step's x measured 1.3e-15 (SA-Solver PECE; DEIS's 10000-point sums 6e-16),
the tolerance is 1e-14.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from support import relative_error

from diffusion.sampling import samplers as ours

pytestmark = pytest.mark.nodevice  # host logic: `pytest -m nodevice`

DATA = Path(__file__).parents[3] / "data" / "comfy_trajectories.npz"
TOL = 1e-14


def _load() -> tuple[dict[str, np.ndarray], dict]:
    with np.load(DATA, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return arrays, json.loads(str(arrays["meta"]))


ARRAYS, META = _load()
CASES = META["cases"]


class Replay:
    """ComfyUI's recorded model calls and noise draws, handed out in order and checked."""

    def __init__(self, case: str):
        self.case = case
        self.get = lambda name: ARRAYS[f"{case}/{name}"]
        self.calls = 0
        self.draws = 0
        self.uncond = None
        self.worst = 0.0

    def __call__(self, x: np.ndarray, sigma: float) -> np.ndarray:
        k = self.calls
        assert k < len(self.get("call_x")), f"{self.case}: more model calls than ComfyUI's"
        expected_sigma = self.get("call_sigma")[k]
        assert math.isclose(sigma, expected_sigma, rel_tol=1e-14), \
            f"{self.case}: call {k} at sigma {sigma!r}, ComfyUI's {expected_sigma!r}"
        error = relative_error(x, self.get("call_x")[k])
        assert error < TOL, f"{self.case}: the x of model call {k} differs by {error:.2e}"
        self.worst = max(self.worst, error)
        self.calls += 1
        if f"{self.case}/call_uncond" in ARRAYS:
            self.uncond = self.get("call_uncond")[k].copy()
        return self.get("call_denoised")[k].copy()

    def noise(self, sigma: float, sigma_next: float) -> np.ndarray:
        j = self.draws
        assert j < len(self.get("noise")), f"{self.case}: more noise draws than ComfyUI's"
        expected = self.get("noise_sigmas")[j]
        if not np.isnan(expected).any():  # torch.randn_like draws carry no sigmas
            np.testing.assert_allclose((sigma, sigma_next), expected, rtol=1e-14,
                                       err_msg=f"{self.case}: noise draw {j}'s sigmas")
        self.draws += 1
        return self.get("noise")[j].copy()


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_every_step_matches_comfyui(case):
    replay = Replay(case["id"])
    sampler = getattr(ours, case["ours"])
    steps: list[int] = []
    result = sampler(replay, replay.get("x").copy(), replay.get("sigmas"), noise=replay.noise,
                     callback=lambda i, x: steps.append(i), **case["options"])
    assert steps == list(range(len(replay.get("sigmas")) - 1))
    assert replay.calls == len(replay.get("call_x")), "fewer model calls than ComfyUI's"
    assert replay.draws == len(replay.get("noise")), "fewer noise draws than ComfyUI's"
    assert relative_error(result, replay.get("result")) < TOL


def test_the_recording_covers_every_comfyui_only_sampler():
    """Each sampler k-diffusion 0.1.1 lacks (test_samplers.py compares the rest with it) has a
    recorded trajectory, and every trajectory's steps differ visibly from a plain Euler run's."""
    kdiffusion = {"euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms",
                  "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m",
                  "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde"}
    webui_only = {"restart"}  # the WebUI's own: no ComfyUI counterpart
    shipped = {info.function.__name__ for info in ours.SAMPLERS if info.function is not None}
    comfy_only = {name for name in shipped
                  if name.removeprefix("sample_") not in kdiffusion | webui_only}
    assert comfy_only - {c["ours"] for c in CASES} == set()
    assert len(META["comfyui_commit"]) == 40
