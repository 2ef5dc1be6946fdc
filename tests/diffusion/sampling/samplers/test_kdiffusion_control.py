"""The WebUI's samplers with ControlNet units against the WebUI's recipe on k-diffusion (see
test_kdiffusion_txt2img), the units applied as the ControlNet extension applies them: at every
model call whose step / steps lies in [guidance_start, guidance_end], diffusers'
ControlNetModel on the UNet's own input (x * c_in, the timestep, the text) gives residuals that
are scaled (Balanced: by the weight on both halves of the batch; "ControlNet is more
important": by weight * 0.825 ** (12 - i) on the conditional half only) and added to diffusers'
UNet's skip connections.

Compared as there: the final latents, relative error under 5e-4. Without the units the result
moves by far more (checked), so the comparison sees them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
import torch  # noqa: E402
from control_tiny import circle, tiny_controlnet  # noqa: E402
from kdiffusion_ref import K  # noqa: E402
from sd_tiny import write_pipeline  # noqa: E402
from test_kdiffusion_txt2img import (  # noqa: E402
    CFG,
    NEGATIVE,
    PROMPT,
    SEED,
    SIZE,
    STEPS,
    Reference,
    _assert_close,
    _assert_moves,
)

import gpucore  # noqa: E402
from diffusion import load_pipeline  # noqa: E402
from diffusion.loaders.control.catalog import load_control_model  # noqa: E402
from diffusion.pipelines.control import ControlUnit  # noqa: E402
from diffusion.pipelines.control_spec import ControlSpec  # noqa: E402

MAP = circle(SIZE, SIZE, seed=3)


class _ControlEps(K.external.DiscreteEpsDDPMDenoiser):
    """The UNet's epsilon with the units' residuals (`units`: (controlnet, weight, start, end,
    cond only); the batch is [cond; uncond] as the WebUI's CFGDenoiser runs it)."""

    units: ClassVar[list[tuple[Any, float, float, float, bool]]] = []
    step = 0
    total = STEPS

    def get_eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        image = torch.from_numpy(MAP.transpose(2, 0, 1)[None] / 255.0).float()
        down = mid = None
        for net, weight, start, end, cond_only in self.units:
            if not start <= self.step / self.total <= end:
                continue
            d, m = net(x, t, encoder_hidden_states=cond,
                       controlnet_cond=image.repeat(x.shape[0], 1, 1, 1), return_dict=False)
            residuals = [*d, m]
            if cond_only:  # soft weights, conditional half only
                half = torch.ones(x.shape[0], 1, 1, 1)
                half[x.shape[0] // 2:] = 0
                residuals = [r * weight * 0.825 ** (12 - i) * half
                             for i, r in enumerate(residuals)]
            else:
                residuals = [r * weight for r in residuals]
            down = residuals[:-1] if down is None else [a + b for a, b in
                                                        zip(down, residuals[:-1])]
            mid = residuals[-1] if mid is None else mid + residuals[-1]
        return self.inner_model(x, t, encoder_hidden_states=cond,
                                down_block_additional_residuals=down,
                                mid_block_additional_residual=mid).sample


class ControlReference(Reference):
    def __init__(self, folder: Any) -> None:
        super().__init__(folder)
        betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
        abar = torch.tensor(np.cumprod(1 - betas), dtype=torch.float32)  # as the parent's
        self.denoiser = _ControlEps(self.pipe.unet, abar, quantize=False)

    def model(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.denoiser.step = self.calls
        return super().model(x, sigma)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pipeline(tmp_path_factory.mktemp("tiny-sd-control"))


@pytest.fixture(scope="module")
def ours(model_dir: Path, first_device: gpucore.Device) -> Any:
    return load_pipeline(model_dir, device=first_device)


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory,
         first_device: gpucore.Device) -> list[tuple[Any, Any]]:
    """Two tiny ControlNets: (diffusers', ours loaded from its folder)."""
    out = []
    for seed in (21, 22):
        reference = tiny_controlnet(seed)
        folder = tmp_path_factory.mktemp("cn") / f"cn{seed}"
        reference.save_pretrained(folder)
        out.append((reference, load_control_model(folder, device=first_device)))
    return out


@pytest.mark.parametrize(("sampler", "function", "schedule", "modes"), [
    ("Euler a", "sample_euler_ancestral", "uniform", ("Balanced", "Balanced")),
    ("DPM++ 2M", "sample_dpmpp_2m", "karras", ("Balanced", "ControlNet is more important")),
])
def test_units_match_the_extensions_recipe(ours: Any, model_dir: Path,
                                           nets: list[tuple[Any, Any]], sampler: str,
                                           function: str, schedule: str,
                                           modes: tuple[str, str]) -> None:
    settings = [(0.8, 0.0, 1.0), (0.6, 0.25, 0.5)]  # weight, start, end
    units = [ControlUnit(net, MAP, weight=w, guidance_start=s, guidance_end=e,
                         control_mode=mode)
             for (_, net), (w, s, e), mode in zip(nets, settings, modes)]
    final: list[np.ndarray] = []
    ours.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, cfg_scale=CFG, seed=SEED,
                 width=SIZE, height=SIZE, sampler=sampler, rng="torch", control=units,
                 on_step=lambda done, total, latents: final.append(latents))
    reference = ControlReference(model_dir)
    _ControlEps.units = [(net, w, s, e, mode == "ControlNet is more important")
                         for (net, _), (w, s, e), mode in zip(nets, settings, modes)]
    expected = reference.sample(function, schedule)
    _assert_close(final[-1], expected)
    _ControlEps.units = []
    _assert_moves(expected, reference.sample(function, schedule), "the units")


def test_a_specs_settings_reach_the_picture(ours: Any, model_dir: Path,
                                            nets: list[tuple[Any, Any]]) -> None:
    """The server's and the CLI's way in: a ControlSpec (the extension's unit arguments) with
    weight, guidance end and control mode away from their defaults gives the extension's
    recipe with those values, and each of them moves the picture (so none may be replaced by
    its default between the spec and the unit)."""
    spec = ControlSpec(model="tiny", image=MAP, weight=0.7, guidance_end=0.3,
                       control_mode="ControlNet is more important")
    final: list[np.ndarray] = []
    ours.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, cfg_scale=CFG, seed=SEED,
                 width=SIZE, height=SIZE, sampler="Euler", rng="torch",
                 control=[spec.unit(nets[0][1], width=SIZE, height=SIZE)],
                 on_step=lambda done, total, latents: final.append(latents))
    reference = ControlReference(model_dir)

    def recipe(weight: float, end: float, cond_only: bool) -> np.ndarray:
        _ControlEps.units = [(nets[0][0], weight, 0.0, end, cond_only)]
        try:
            return reference.sample("sample_euler", "uniform")
        finally:
            _ControlEps.units = []

    expected = recipe(0.7, 0.3, True)
    _assert_close(final[-1], expected)
    for what, other in (("the weight", recipe(1.0, 0.3, True)),
                        ("the guidance end", recipe(0.7, 1.0, True)),
                        ("the control mode", recipe(0.7, 0.3, False))):
        _assert_moves(expected, other, what)


def test_hires_pass_gets_the_maps_at_its_size(ours: Any, nets: list[tuple[Any, Any]],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A hires fix: each pass fits the unit's map (here 20x24, Crop and Resize) to its own
    size, and hr_option picks the passes a unit guides (the extension's detectmap_proc for
    hr_y x hr_x)."""
    import diffusion.pipelines.sd.stable_diffusion as sd
    from diffusion.pipelines.control import Control
    from diffusion.preprocessors.resize import fit_map
    from diffusion.upscalers.interpolation import HiresFix

    seen: list[tuple[tuple[int, int], list[str], list[tuple[int, ...]]]] = []

    class Spy(Control):
        def _fitted(self, unit: ControlUnit) -> Any:
            fitted = super()._fitted(unit)
            width, height = self.size
            np.testing.assert_array_equal(fitted, fit_map(unit.image, width, height,
                                                          "Crop and Resize"))
            seen.append((self.size, [u.hr_option for u in self.units], fitted.shape))
            return fitted

    monkeypatch.setattr(sd, "Control", Spy)
    picture = circle(20, 24, seed=5)
    units = [ControlUnit(nets[0][1], picture), ControlUnit(nets[1][1], picture,
                                                           hr_option="Low res only")]
    result = ours.txt2img(PROMPT, steps=1, width=SIZE, height=SIZE, seed=SEED,
                          hires=HiresFix(scale=2.0, upscaler="Latent", steps=1, denoise=0.5),
                          control=units)
    assert result.images[0].shape == (2 * SIZE, 2 * SIZE, 3)
    sizes = {(size, tuple(options), shape) for size, options, shape in seen}
    assert sizes == {((SIZE, SIZE), ("Both", "Low res only"), (SIZE, SIZE, 3)),
                     ((2 * SIZE, 2 * SIZE), ("Both",), (2 * SIZE, 2 * SIZE, 3))}
