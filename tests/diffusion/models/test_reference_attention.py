"""reference_only's attention injection on a tiny UNet against a torch reference typed from
sd-webui-controlnet's scripts/hook.py (its AutoMachine as diffusers attention processors on
the self-attention layers): a write call on the noised reference, then the read call whose
self-attention attends to [own, saved] tokens, the unconditional rows mixed by the style
fidelity; only the layers ranked below the weight save. The reference picture matters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from sd_tiny import randomized, state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models import UNet2DConditionModel
from diffusion.models.reference_attention import ReferenceAttention, noised_reference

TOL = 3e-4
# attention at two widths (32 and 64), so that a weight below 1 leaves the narrow layers out
UNET = dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
            out_channels=4, down_block_types=("CrossAttnDownBlock2D",) * 2,
            up_block_types=("CrossAttnUpBlock2D",) * 2, cross_attention_dim=32,
            attention_head_dim=(2, 4), norm_num_groups=32)


class _Machine:
    mode, weight, fidelity, uncond = "read", 1.0, 0.0, [0]


class _HookProcessor:
    """hook.py's hacked_basic_transformer_inner_forward, for attn1 of one block."""

    def __init__(self, machine: _Machine, rank: float) -> None:
        from diffusers.models.attention_processor import AttnProcessor

        self.machine, self.rank, self.plain = machine, rank, AttnProcessor()
        self.bank: list[Any] = []
        self.fidelities: list[float] = []

    def __call__(self, attn: Any, hidden_states: Any, encoder_hidden_states: Any = None,
                 attention_mask: Any = None, temb: Any = None, **kwargs: Any) -> Any:
        m = self.machine
        if m.mode == "write":
            if m.weight > self.rank:
                self.bank.append(hidden_states.detach().clone())
                self.fidelities.append(m.fidelity)
            return self.plain(attn, hidden_states)
        if not self.bank:
            return self.plain(attn, hidden_states)
        style_cfg = sum(self.fidelities) / float(len(self.fidelities))
        uc = self.plain(attn, hidden_states, torch.cat([hidden_states, *self.bank], dim=1))
        c = uc.clone()
        if len(m.uncond) > 0 and style_cfg > 1e-5:
            c[m.uncond] = self.plain(attn, hidden_states[m.uncond])
        self.bank, self.fidelities = [], []
        return style_cfg * c + (1.0 - style_cfg) * uc


def _hooked(unet: Any, machine: _Machine) -> None:
    from diffusers.models.attention import BasicTransformerBlock

    groups = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]  # the LDM UNet's DFS order
    blocks = [m for g in groups for a in getattr(g, "attentions", None) or ()
              for m in a.modules() if isinstance(m, BasicTransformerBlock)]
    blocks = sorted(blocks, key=lambda b: -b.norm1.normalized_shape[0])
    for i, block in enumerate(blocks):
        block.attn1.set_processor(_HookProcessor(machine, i / len(blocks)))


def test_reference_only_equals_hook_py(first_device: gpucore.Device) -> None:
    """Weight 0.5: the four 64-wide of the seven layers save, the 32-wide ones not; style
    fidelity 0.5 mixes the uncond row. (Weight 1, fidelity 1: the test below.)"""
    import diffusers

    weight, fidelity = 0.5, 0.5
    device = first_device
    reference = randomized(diffusers.UNet2DConditionModel(**UNET), 1)
    ours = UNet2DConditionModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    machine = _Machine()
    _hooked(reference, machine)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 12, 10)).astype(np.float32)  # rows: uncond, cond
    context = rng.standard_normal((2, 5, 32)).astype(np.float32)
    alphas_cumprod = np.cumprod(1 - np.linspace(0.00085, 0.012, 1000))
    t = 620.4

    def expected(latents: np.ndarray) -> np.ndarray:
        ref_xt = noised_reference(latents, t, alphas_cumprod, noise)
        with torch.no_grad():
            machine.mode, machine.weight, machine.fidelity = "write", weight, fidelity
            reference(torch.from_numpy(ref_xt), t, torch.from_numpy(context))
            machine.mode, machine.uncond = "read", [0]
            return reference(torch.from_numpy(x), t, torch.from_numpy(context)).sample.numpy()

    picture = rng.standard_normal((2, 4, 12, 10)).astype(np.float32)
    noise = rng.standard_normal((2, 4, 12, 10)).astype(np.float32)
    injection = ReferenceAttention(ours)
    ctx = gpustd.asarray(context, device=device)
    with injection.installed():
        ref_xt = gpustd.asarray(noised_reference(picture, t, alphas_cumprod, noise),
                                device=device)
        injection.write(lambda: ours(ref_xt, t, ctx), weight=weight, style_fidelity=fidelity)
        got = injection.read(lambda: ours(gpustd.asarray(x, device=device), t, ctx),
                             uncond_rows=1).numpy()
    theirs = expected(picture)
    assert_close(got, theirs, tol=TOL)

    with torch.no_grad():
        plain = reference(torch.from_numpy(x), t, torch.from_numpy(context)).sample.numpy()
    other = expected(picture[::-1].copy())
    visible = 0.05 * np.abs(theirs).mean()
    assert np.abs(plain - theirs).mean() > visible  # the injection acts
    assert np.abs(other - theirs).mean() > visible  # the reference picture matters
    assert_close(ours(gpustd.asarray(x, device=device), t, ctx).numpy(), plain, tol=TOL)


def test_reference_injection_of_a_unit(first_device: gpucore.Device) -> None:
    """A ReferenceUnit through ReferenceInjection at one UNet call: the picture in [-1, 1]
    to the given encoder, its latents on every row, noised to round(t) by q_sample with the
    step's fixed draw, the control mode's fidelity: hook.py's output for the same noise."""
    import diffusers

    from diffusion.pipelines.reference import ReferenceInjection, ReferenceUnit

    device = first_device
    reference = randomized(diffusers.UNet2DConditionModel(**UNET), 1)
    ours = UNet2DConditionModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    machine = _Machine()
    _hooked(reference, machine)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 4, 6, 5)).astype(np.float32)
    context = rng.standard_normal((2, 5, 32)).astype(np.float32)
    picture = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    projection = rng.standard_normal((4, 3)).astype(np.float32)

    def encode(pixels: np.ndarray) -> np.ndarray:  # a stand-in VAE: 2x2 means, 3 -> 4 channels
        pooled = pixels.reshape(1, 3, 6, 2, 5, 2).mean(axis=(3, 5))
        return np.einsum("oc,bchw->bohw", projection, pooled) * 3

    abar = np.cumprod(1 - np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)
    t, step = 377.6, 2
    unit = ReferenceUnit(picture, control_mode="ControlNet is more important")  # fidelity 1
    injection = ReferenceInjection([unit], ours, total_steps=4, size=(10, 12), encode=encode,
                                   alphas_cumprod=abar)
    ctx = gpustd.asarray(context, device=device)
    got = injection.run(lambda sample, control: ours(sample, t, ctx),
                        gpustd.asarray(x, device=device), t, step=step, uncond_rows=1).numpy()

    latents = encode(picture.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1)
    noise = np.random.default_rng(step).standard_normal(x.shape)
    a = abar[378]
    ref_xt = (np.sqrt(a) * np.repeat(latents, 2, axis=0) + np.sqrt(1 - a) * noise)
    with torch.no_grad():
        machine.mode, machine.weight, machine.fidelity = "write", 1.0, 1.0
        reference(torch.from_numpy(ref_xt.astype(np.float32)), t, torch.from_numpy(context))
        machine.mode, machine.uncond = "read", [0]
        theirs = reference(torch.from_numpy(x), t, torch.from_numpy(context)).sample.numpy()
    assert_close(got, theirs, tol=TOL)
