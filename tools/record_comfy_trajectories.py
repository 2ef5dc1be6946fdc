"""Record ComfyUI's own samplers, step by step, as test data for the samplers only ComfyUI has.

    .venv/bin/python tools/record_comfy_trajectories.py PATH/TO/ComfyUI \
        [--out tests/data/comfy_trajectories.npz] [--commit HASH]

PATH/TO/ComfyUI is a ComfyUI checkout (the tool reads its `comfy/k_diffusion/sampling.py`,
`deis.py` and `sa_solver.py`; nothing else of ComfyUI is imported: the few names those modules
take from the rest of `comfy` are stubbed below, `k_diffusion/utils.py` too, whose torchvision
import this environment lacks). --commit defaults to the checkout's
`git rev-parse HEAD`. Not run by CI: tests/diffusion/sampling/samplers/test_comfy_trajectories.py
replays the file it writes.

Every sampler runs in torch float64 (the default dtype is set to float64 so that DEIS's and
SA-Solver's internal tensors are float64 too) on a batch of 2 small latents, with a fixed
nonlinear denoiser (`toy_denoiser`: x0 is a tanh of a random linear map of x, so every weight of
every step reaches the output) and a fixed noise stream. The file holds, per case, the starting
latent and sigmas, every model call (its x, sigma, the guided x0 it returned and, for CFG++, the
unconditional x0), every noise draw (with its sigma pair) and the result. Only numbers recorded
from ComfyUI go into the file, none of its code.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CASES", "record", "toy_denoiser"]

SHAPE = (2, 6)
"""A batch of 2 latents of 6 values: small enough for a few KB per case."""
GUIDANCE = 2.5
"""The CFG scale of the fake model: guided = uncond + GUIDANCE (cond - uncond)."""
KARRAS = (14.6146, 0.0292, 10)
"""sigma_max, sigma_min, steps of the Karras schedule (rho 7) of the eps-model cases."""
FLOW_SHIFT = 3.0
"""The flow cases' sigmas: shift t / (1 + (shift - 1) t) for t = 1 ... 0 in 10 steps."""


def toy_denoiser(x: np.ndarray, sigma: float, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """An EDM-shaped denoiser: x / (sigma^2 + 1) + sigma c_in tanh(W c_in x + b) per batch item."""
    c_in = 1 / math.sqrt(sigma**2 + 1)
    out = np.tanh(x.reshape(len(x), -1) * c_in @ weight.T + bias).reshape(x.shape)
    return x / (sigma**2 + 1) + out * sigma * c_in


def karras_sigmas() -> np.ndarray:
    sigma_max, sigma_min, steps = KARRAS
    ramp = np.linspace(0, 1, steps)
    inv = sigma_max ** (1 / 7) + ramp * (sigma_min ** (1 / 7) - sigma_max ** (1 / 7))
    return np.append(inv**7, 0.0)


def flow_sigmas() -> np.ndarray:
    t = np.linspace(1, 0, 11)
    return FLOW_SHIFT * t / (1 + (FLOW_SHIFT - 1) * t)


CHURN = {"s_churn": 2.0, "s_tmin": 0.3, "s_tmax": 6.0, "s_noise": 1.003}
TAU = (5.0, 0.5)
"""SA-Solver's stochastic interval (high, low sigma), given explicitly to both sides."""

# id: (ComfyUI function, its options, our function, our options, sigmas, CFG++)
CASES: dict[str, tuple[str, dict[str, Any], str, dict[str, Any], str, bool]] = {
    "ipndm": ("sample_ipndm", {}, "sample_ipndm", {}, "karras", False),
    "ipndm-order2": ("sample_ipndm", {"max_order": 2}, "sample_ipndm", {"max_order": 2},
                     "karras", False),
    "ipndm_v": ("sample_ipndm_v", {}, "sample_ipndm_v", {}, "karras", False),
    "ipndm_v-order3": ("sample_ipndm_v", {"max_order": 3}, "sample_ipndm_v", {"max_order": 3},
                       "karras", False),
    "deis": ("sample_deis", {}, "sample_deis", {}, "karras", False),
    "deis-order4": ("sample_deis", {"max_order": 4}, "sample_deis", {"max_order": 4},
                    "karras", False),
    # ComfyUI's 'rhoab' coefficient list outgrows its sampler's order from step max_order on
    # (too many values to unpack), so it runs only the first three steps of the schedule
    "deis-rhoab": ("sample_deis", {"deis_mode": "rhoab"}, "sample_deis", {"deis_mode": "rhoab"},
                   "karras-head", False),
    "heunpp2": ("sample_heunpp2", {}, "sample_heunpp2", {}, "karras", False),
    "heunpp2-churn": ("sample_heunpp2", CHURN, "sample_heunpp2", CHURN, "karras", False),
    "res_multistep": ("sample_res_multistep", {}, "sample_res_multistep", {}, "karras", False),
    "res_multistep_cfg_pp": ("sample_res_multistep_cfg_pp", {}, "sample_res_multistep_cfg_pp",
                             {}, "karras", True),
    "res_multistep_ancestral": ("sample_res_multistep_ancestral", {},
                                "sample_res_multistep_ancestral", {}, "karras", False),
    "res_multistep_ancestral-eta": ("sample_res_multistep_ancestral",
                                    {"eta": 0.6, "s_noise": 0.9},
                                    "sample_res_multistep_ancestral",
                                    {"eta": 0.6, "s_noise": 0.9}, "karras", False),
    "res_multistep_ancestral_cfg_pp": ("sample_res_multistep_ancestral_cfg_pp", {},
                                       "sample_res_multistep_ancestral_cfg_pp", {}, "karras",
                                       True),
    "euler_cfg_pp": ("sample_euler_cfg_pp", {}, "sample_euler_cfg_pp", {}, "karras", True),
    "euler_ancestral_cfg_pp": ("sample_euler_ancestral_cfg_pp", {},
                               "sample_euler_ancestral_cfg_pp", {}, "karras", True),
    "euler_ancestral_cfg_pp-eta": ("sample_euler_ancestral_cfg_pp", {"eta": 0.5, "s_noise": 1.1},
                                   "sample_euler_ancestral_cfg_pp", {"eta": 0.5, "s_noise": 1.1},
                                   "karras", True),
    "dpmpp_2m_cfg_pp": ("sample_dpmpp_2m_cfg_pp", {}, "sample_dpmpp_2m_cfg_pp", {}, "karras",
                        True),
    "dpmpp_2s_ancestral_cfg_pp": ("sample_dpmpp_2s_ancestral_cfg_pp", {},
                                  "sample_dpmpp_2s_ancestral_cfg_pp", {}, "karras", True),
    "dpmpp_2s_ancestral_cfg_pp-eta": ("sample_dpmpp_2s_ancestral_cfg_pp",
                                      {"eta": 0.4, "s_noise": 0.8},
                                      "sample_dpmpp_2s_ancestral_cfg_pp",
                                      {"eta": 0.4, "s_noise": 0.8}, "karras", True),
    "ddpm": ("sample_ddpm", {}, "sample_ddpm", {}, "karras", False),
    "lcm": ("sample_lcm", {}, "sample_lcm", {}, "karras", False),
    "sa_solver": ("sample_sa_solver", {"tau": (*TAU, 1.0)}, "sample_sa_solver",
                  {"tau_sigma_range": TAU}, "karras", False),
    "sa_solver-options": ("sample_sa_solver",
                          {"tau": (*TAU, 0.7), "s_noise": 0.9, "predictor_order": 2,
                           "corrector_order": 2, "simple_order_2": True},
                          "sample_sa_solver",
                          {"tau_sigma_range": TAU, "eta": 0.7, "s_noise": 0.9,
                           "predictor_order": 2, "corrector_order": 2, "simple_order_2": True},
                          "karras", False),
    "sa_solver-ode": ("sample_sa_solver", {"tau": (*TAU, 0.0)}, "sample_sa_solver",
                      {"tau_sigma_range": TAU, "eta": 0.0}, "karras", False),
    "sa_solver_pece": ("sample_sa_solver_pece", {"tau": (*TAU, 1.0)}, "sample_sa_solver_pece",
                       {"tau_sigma_range": TAU}, "karras", False),
    "euler_ancestral_rf": ("sample_euler_ancestral", {}, "sample_euler_ancestral_rf", {},
                           "flow", False),
    "euler_ancestral_rf-eta": ("sample_euler_ancestral", {"eta": 0.7, "s_noise": 0.9},
                               "sample_euler_ancestral_rf", {"eta": 0.7, "s_noise": 0.9},
                               "flow", False),
}

UNUSED_DRAWS = {"heunpp2", "res_multistep", "res_multistep_cfg_pp"}
"""Cases where ComfyUI draws noise only to multiply it by 0 (HeunPP2 without churn, Res
Multistep at eta = 0); ours draws none there, so these draws are not recorded."""


def _load_comfy(checkout: Path) -> types.ModuleType:
    """comfy.k_diffusion.sampling from `checkout`, with the rest of `comfy` stubbed."""
    import torch

    class EPS:
        """ComfyUI's model_sampling.EPS where the samplers touch it (LCM's noise_scaling)."""

        def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
            return noise * sigma + latent_image

        def percent_to_sigma(self, percent):
            raise AssertionError("the cases give SA-Solver its tau interval")

    class CONST:
        """A flow (rectified-flow) model's sampling: only its type is read."""

    def set_model_options_post_cfg_function(model_options, post_cfg_function,
                                            disable_cfg1_optimization=False):
        model_options["sampler_post_cfg_function"] = (
            [*model_options.get("sampler_post_cfg_function", []), post_cfg_function])
        if disable_cfg1_optimization:
            model_options["disable_cfg1_optimization"] = True
        return model_options

    def append_dims(x, target_dims):
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    root = checkout / "comfy"
    if not (root / "k_diffusion" / "sampling.py").is_file():
        raise SystemExit(f"{checkout} is not a ComfyUI checkout (no comfy/k_diffusion/"
                         "sampling.py); pass the folder that holds ComfyUI's comfy/")
    package = types.ModuleType("comfy")
    package.__path__ = [str(root)]
    k_package = types.ModuleType("comfy.k_diffusion")
    k_package.__path__ = [str(root / "k_diffusion")]
    stubs = {
        "comfy": package,
        "comfy.k_diffusion": k_package,
        "comfy.k_diffusion.utils": types.SimpleNamespace(append_dims=append_dims),
        "comfy.model_patcher": types.SimpleNamespace(
            set_model_options_post_cfg_function=set_model_options_post_cfg_function),
        "comfy.model_sampling": types.SimpleNamespace(EPS=EPS, CONST=CONST),
        "comfy.memory_management": types.SimpleNamespace(),
        "comfy.utils": types.SimpleNamespace(model_trange=lambda n, disable=None, **_: range(n)),
    }
    for name, module in stubs.items():
        sys.modules[name] = module  # type: ignore[assignment]
    for name, module in stubs.items():
        if name.count(".") == 1:
            setattr(package, name.split(".")[1], module)
    torch.set_default_dtype(torch.float64)
    return importlib.import_module("comfy.k_diffusion.sampling")


class _Recorder:
    """The fake ComfyUI model (guided x0 through the post-CFG hooks) and noise source, recording
    every call and draw."""

    def __init__(self, flow: bool, stubs: types.ModuleType, seed: int):
        import torch

        self.torch = torch
        rng = np.random.default_rng(seed)
        size = math.prod(SHAPE[1:])
        self.cond = (rng.standard_normal((size, size)) / math.sqrt(size),
                     rng.standard_normal(size) * 0.3)
        self.uncond = (rng.standard_normal((size, size)) / math.sqrt(size),
                       rng.standard_normal(size) * 0.3)
        self.noise_rng = np.random.default_rng(seed + 1)
        sampling = stubs.CONST() if flow else stubs.EPS()
        patcher = types.SimpleNamespace(get_model_object=lambda name: sampling)
        self.inner_model = types.SimpleNamespace(
            inner_model=types.SimpleNamespace(model_sampling=sampling), model_patcher=patcher)
        self.calls: list[tuple[np.ndarray, float, np.ndarray, np.ndarray]] = []
        self.draws: list[tuple[float, float, np.ndarray]] = []

    def __call__(self, x, sigma, model_options=None, **_):
        values = sigma.flatten().tolist()
        assert all(v == values[0] for v in values), values
        x_np = x.detach().numpy().copy()
        cond = toy_denoiser(x_np, values[0], *self.cond)
        uncond = toy_denoiser(x_np, values[0], *self.uncond)
        guided = uncond + GUIDANCE * (cond - uncond)
        denoised = self.torch.from_numpy(guided.copy())
        for hook in (model_options or {}).get("sampler_post_cfg_function", []):
            denoised = hook({"denoised": denoised, "uncond_denoised":
                             self.torch.from_numpy(uncond.copy()), "cond_denoised":
                             self.torch.from_numpy(cond.copy()), "sigma": sigma, "input": x})
        self.calls.append((x_np, values[0], guided, uncond))
        return denoised

    def noise(self, sigma=math.nan, sigma_next=math.nan):
        draw = self.noise_rng.standard_normal(SHAPE)
        self.draws.append((float(sigma), float(sigma_next), draw))
        return self.torch.from_numpy(draw.copy())


class _RandnLike:
    """torch for the sampling module, with randn_like drawing from the recorder (HeunPP2's churn
    draws with torch.randn_like; ours asks its noise source in the same order)."""

    def __init__(self, torch: types.ModuleType, recorder: _Recorder):
        self._torch, self._recorder = torch, recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._torch, name)

    def randn_like(self, x: Any) -> Any:
        return self._recorder.noise()


def record(checkout: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Run every case of `CASES` through ComfyUI's samplers; the arrays for the .npz file."""
    import torch

    sampling = _load_comfy(checkout)
    stubs = sys.modules["comfy.model_sampling"]
    arrays: dict[str, np.ndarray] = {}
    cases = []
    for number, (case, (comfy_name, comfy_options, ours, our_options, schedule, cfg_pp)) in (
            enumerate(CASES.items())):
        sigmas = {"karras": karras_sigmas, "flow": flow_sigmas,
                  "karras-head": lambda: karras_sigmas()[:4]}[schedule]()
        recorder = _Recorder(schedule == "flow", stubs, seed + 10 * number)
        x = np.random.default_rng(seed + 10 * number + 2).standard_normal(SHAPE) * sigmas[0]
        options = dict(comfy_options)
        if "tau" in options:
            high, low, eta = options.pop("tau")
            options["tau_func"] = sampling.sa_solver.get_tau_interval_func(high, low, eta=eta)
        function = getattr(sampling, comfy_name)
        if "noise_sampler" in inspect.signature(function).parameters:
            options["noise_sampler"] = recorder.noise
        sampling.torch = _RandnLike(torch, recorder)
        try:
            result = function(recorder, torch.from_numpy(x.copy()), torch.from_numpy(sigmas),
                              disable=True, **options).numpy()
        finally:
            sampling.torch = torch
        if case in UNUSED_DRAWS:
            recorder.draws.clear()
        prefix = f"{case}/"
        arrays[prefix + "x"] = x
        arrays[prefix + "sigmas"] = sigmas
        arrays[prefix + "call_x"] = np.stack([c[0] for c in recorder.calls])
        arrays[prefix + "call_sigma"] = np.array([c[1] for c in recorder.calls])
        arrays[prefix + "call_denoised"] = np.stack([c[2] for c in recorder.calls])
        if cfg_pp:
            arrays[prefix + "call_uncond"] = np.stack([c[3] for c in recorder.calls])
        arrays[prefix + "noise"] = np.stack([d[2] for d in recorder.draws]) if recorder.draws \
            else np.zeros((0, *SHAPE))
        arrays[prefix + "noise_sigmas"] = np.array([d[:2] for d in recorder.draws]).reshape(-1, 2)
        arrays[prefix + "result"] = result
        cases.append({"id": case, "comfyui": comfy_name, "comfyui_options": repr(comfy_options),
                      "ours": ours, "options": our_options, "cfg_pp": cfg_pp})
        print(f"{case}: {len(recorder.calls)} model calls, {len(recorder.draws)} noise draws")
    arrays["meta"] = np.array(json.dumps({"cases": cases}))
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("comfyui", type=Path, help="a ComfyUI checkout")
    parser.add_argument("--out", type=Path, default=Path("tests/data/comfy_trajectories.npz"))
    parser.add_argument("--commit", help="ComfyUI's commit (default: the checkout's HEAD)")
    args = parser.parse_args(argv)
    commit = args.commit
    if commit is None:
        done = subprocess.run(["git", "-C", str(args.comfyui), "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            parser.error(f"{args.comfyui} is not a git checkout: pass --commit HASH")
        commit = done.stdout.strip()
    arrays = record(args.comfyui)
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({"comfyui_commit": commit, **meta}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, ComfyUI {commit})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
