"""reference_adain and reference_adain+attn (sd-webui-controlnet's scripts/hook.py): the
blocks hook.py renormalizes and their ranks; AdaIN itself against numpy; and a ReferenceUnit
of each reference module at one UNet call of a tiny SD UNet against a torch reference typed
from hook.py (its `hacked_group_norm_forward` as forward hooks on a diffusers UNet's blocks,
its attention machine as attention processors). Each module changes the output, each
differently, and the reference picture matters."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import gpucore
import gpustd
from diffusion.models.reference_adain import ReferenceAdaIN, adain, block_ranks

TOL = 3e-4


def _unet_shape(levels: int, layers: int) -> Any:
    """A stand-in UNet with the blocks' structure only: `levels` down and up blocks of
    `layers` (up: layers + 1) resnets, a sampler between levels."""
    def block(count: int, sampler: bool) -> Any:
        return SimpleNamespace(resnets=[None] * count,
                               sampler=lambda: object() if sampler else None)

    return SimpleNamespace(down_blocks=[block(layers, i < levels - 1) for i in range(levels)],
                           up_blocks=[block(layers + 1, i < levels - 1) for i in range(levels)])


@pytest.mark.nodevice
def test_blocks_are_hook_py_lists() -> None:
    """SD 1.5's input 4, 5, 7, 8, 10, 11 and output 0-7; SDXL's input 4, 5, 7, 8 and output
    0-5; ranked as hook.py ranks them (gn_weight, doubled)."""
    sd15 = block_ranks(_unet_shape(4, 2))
    assert sd15 == {("middle", 0): 0.0,
                    **{("input", i): 2 * (1 - w / 6) for w, i in enumerate([4, 5, 7, 8, 10, 11])},
                    **{("output", w): 2 * w / 8 for w in range(8)}}
    sdxl = block_ranks(_unet_shape(3, 2))
    assert sorted(k for k in sdxl if k[0] == "input") == [("input", i) for i in (4, 5, 7, 8)]
    assert sorted(k for k in sdxl if k[0] == "output") == [("output", i) for i in range(6)]
    assert sdxl[("input", 7)] == 2 * (1 - 2 / 4) and sdxl[("output", 5)] == 2 * 5 / 6


def _numpy_adain(x: np.ndarray, saved: list[np.ndarray], fidelity: float, rows: int
                 ) -> np.ndarray:
    """hook.py's read: torch.var_mean(correction=0) over (2, 3), std floored at 1e-6."""
    mean, var = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
    mean_acc = np.mean([s.mean(axis=(2, 3), keepdims=True) for s in saved], axis=0)
    var_acc = np.mean([s.var(axis=(2, 3), keepdims=True) for s in saved], axis=0)
    y_uc = (x - mean) / np.maximum(var, 1e-6) ** 0.5 * np.maximum(var_acc, 1e-6) ** 0.5 + mean_acc
    y_c = y_uc.copy()
    if rows and fidelity > 1e-5:
        y_c[:rows] = x[:rows]
    return fidelity * y_c + (1 - fidelity) * y_uc


def test_adain_statistics_equal_numpy(first_device: gpucore.Device) -> None:
    """Two writes (their statistics averaged), a constant channel (variance under the
    floor), odd sizes; then a read through the machine at a hooked block, which empties the
    bank, and a block it does not hook passing through."""
    rng = np.random.default_rng(3)
    shape = (3, 5, 7, 9)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    x[1, 2] = 0.5
    saved = [(rng.standard_normal(shape) * s - 3).astype(np.float32) for s in (0.5, 1.5)]
    device = first_device
    tensors = [gpustd.asarray(a, device=device) for a in (x, *saved)]
    means = [gpustd.mean(t.reshape(3, 5, -1), axis=2, keepdims=True) for t in tensors[1:]]
    variances = [gpustd.var(t.reshape(3, 5, -1), axis=2, keepdims=True) for t in tensors[1:]]
    for fidelity, rows in ((0.0, 1), (0.3, 1), (0.7, 3), (0.3, 0)):
        got = adain(tensors[0], means, variances, fidelity=fidelity, uncond_rows=rows)
        np.testing.assert_allclose(got.numpy(), _numpy_adain(x, saved, fidelity, rows),
                                   rtol=1e-4, atol=1e-4)

    machine = ReferenceAdaIN(SimpleNamespace(**vars(_unet_shape(2, 1))))
    assert machine.blocks.keys() == {("middle", 0), ("input", 3), ("output", 0), ("output", 1)}
    for array, fidelity in zip(tensors[1:], (0.2, 0.6)):
        machine.write(lambda a=array: machine.block_output("output", 0, a), weight=0.5,
                      style_fidelity=fidelity)
    assert machine.write(lambda: machine.block_output("output", 1, tensors[1]), weight=1.0,
                         style_fidelity=0.0) is tensors[1]  # rank 1 is not below weight 1
    assert machine.block_output("output", 2, tensors[0]) is tensors[0]
    got = machine.read(lambda: machine.block_output("output", 0, tensors[0]), uncond_rows=1)
    np.testing.assert_allclose(got.numpy(), _numpy_adain(x, saved, 0.4, 1), rtol=1e-4,
                               atol=1e-4)
    assert machine.block_output("output", 0, tensors[0]) is tensors[0]  # the read emptied it


class _Machine:
    """hook.py's two AutoMachines and the call's unconditional rows."""

    attention, adain, weight, fidelity, uncond = "read", "read", 1.0, 0.0, [0]


def _torch_hooks(unet: Any, machine: _Machine) -> None:
    """hook.py on a diffusers UNet: `hacked_basic_transformer_inner_forward` as processors
    of the self-attention layers, `hacked_group_norm_forward` as forward hooks on the
    modules whose outputs are the LDM UNet's blocks'."""
    import torch
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.attention_processor import AttnProcessor

    plain = AttnProcessor()

    class Attention:
        def __init__(self, rank: float) -> None:
            self.rank, self.bank, self.cfgs = rank, [], []

        def __call__(self, attn: Any, hidden: Any, context: Any = None, *_: Any,
                     **__: Any) -> Any:
            if machine.attention == "write":
                if machine.weight > self.rank:
                    self.bank.append(hidden.clone())
                    self.cfgs.append(machine.fidelity)
                return plain(attn, hidden)
            if not self.bank:
                return plain(attn, hidden)
            cfg = sum(self.cfgs) / len(self.cfgs)
            uc = plain(attn, hidden, torch.cat([hidden, *self.bank], dim=1))
            c = uc.clone()
            if machine.uncond and cfg > 1e-5:
                c[machine.uncond] = plain(attn, hidden[machine.uncond])
            self.bank, self.cfgs = [], []
            return cfg * c + (1 - cfg) * uc

    groups = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    blocks = sorted([m for g in groups for a in getattr(g, "attentions", None) or ()
                     for m in a.modules() if isinstance(m, BasicTransformerBlock)],
                    key=lambda b: -b.norm1.normalized_shape[0])
    for i, block in enumerate(blocks):
        block.attn1.set_processor(Attention(i / len(blocks)))

    def adain_hook(rank: float) -> Any:
        means: list[Any] = []
        variances: list[Any] = []
        cfgs: list[float] = []

        def hook(module: Any, args: Any, output: Any) -> Any:
            x = output[0] if isinstance(output, tuple) else output
            y = None
            if machine.adain == "write" and machine.weight > rank:
                var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
                means.append(mean)
                variances.append(var)
                cfgs.append(machine.fidelity)
            if machine.adain == "read":
                if means:
                    cfg = sum(cfgs) / len(cfgs)
                    var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
                    std = torch.clamp(var, min=1e-6) ** 0.5
                    std_acc = torch.clamp(sum(variances) / len(variances), min=1e-6) ** 0.5
                    y_uc = (x - mean) / std * std_acc + sum(means) / len(means)
                    y_c = y_uc.clone()
                    if machine.uncond and cfg > 1e-5:
                        y_c[machine.uncond] = x[machine.uncond]
                    y = cfg * y_c + (1 - cfg) * y_uc
                means.clear(), variances.clear(), cfgs.clear()
            if y is None:
                return output
            return (y, *output[1:]) if isinstance(output, tuple) else y
        return hook

    def ends(block: Any) -> list[Any]:  # the module ending each resnet's LDM block
        attentions = getattr(block, "attentions", None)
        out = [attentions[j] if attentions else res for j, res in enumerate(block.resnets)]
        if getattr(block, "upsamplers", None):
            out[-1] = block.upsamplers[0]
        return out

    inputs = [m for level, b in enumerate(unet.down_blocks) if level for m in ends(b)]
    outputs = [m for b in unet.up_blocks for m in ends(b)]
    outputs = outputs[:len(outputs) * 2 // 3]
    unet.mid_block.register_forward_hook(adain_hook(0.0))
    for w, module in enumerate(inputs):
        module.register_forward_hook(adain_hook(2 * (1 - w / len(inputs))))
    for w, module in enumerate(outputs):
        module.register_forward_hook(adain_hook(2 * w / len(outputs)))


def test_reference_modules_equal_hook_py(first_device: gpucore.Device) -> None:
    """On sd_tiny's UNet (a plain level, then cross-attention), weight 1.6 so that input 5,
    outputs 0-3 and the middle renormalize, fidelity 0.5 mixing the uncond row: each
    module's output equals hook.py's for the same noised reference (ours checked for the
    AdaIN modules; the reference's outputs show the modules apart)."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    import torch
    from sd_tiny import state_dict, tiny_unet

    from diffusion.models import UNet2DConditionModel
    from diffusion.pipelines.reference import ReferenceInjection, ReferenceUnit

    device = first_device
    reference = tiny_unet(4)
    ours = UNet2DConditionModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    machine = _Machine()
    _torch_hooks(reference, machine)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 4, 10, 6)).astype(np.float32)  # rows: uncond, cond
    context = rng.standard_normal((2, 5, 32)).astype(np.float32)
    pictures = [rng.integers(0, 256, (20, 12, 3), dtype=np.uint8) for _ in range(2)]
    projection = rng.standard_normal((4, 3)).astype(np.float32)

    def encode(pixels: np.ndarray) -> np.ndarray:  # a stand-in VAE: 2x2 means, 3 -> 4 channels
        pooled = pixels.reshape(1, 3, 10, 2, 6, 2).mean(axis=(3, 5))
        return np.einsum("oc,bchw->bohw", projection, pooled) * 3

    abar = np.cumprod(1 - np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)
    t, step, weight = 377.6, 1, 1.6
    ctx = gpustd.asarray(context, device=device)
    a = abar[378]
    noise = np.random.default_rng(step).standard_normal(x.shape)

    def ours_of(module: str, picture: np.ndarray) -> np.ndarray:
        unit = ReferenceUnit(picture, weight=weight, module=module)
        injection = ReferenceInjection([unit], ours, total_steps=4, size=(12, 20),
                                       encode=encode, alphas_cumprod=abar)
        return injection.run(lambda sample, control: ours(sample, t, ctx),
                             gpustd.asarray(x, device=device), t, step=step,
                             uncond_rows=1).numpy()

    def theirs_of(module: str, picture: np.ndarray) -> np.ndarray:
        latents = encode(picture.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1)
        ref_xt = np.sqrt(a) * np.repeat(latents, 2, axis=0) + np.sqrt(1 - a) * noise
        with torch.no_grad():
            machine.attention = "write" if module != "reference_adain" else "read"
            machine.adain = "write" if module != "reference_only" else "read"
            machine.weight, machine.fidelity, machine.uncond = weight, 0.5, [0]
            reference(torch.from_numpy(ref_xt.astype(np.float32)), t, torch.from_numpy(context))
            machine.attention = machine.adain = "read"
            return reference(torch.from_numpy(x), t, torch.from_numpy(context)).sample.numpy()

    from support import assert_close

    with torch.no_grad():
        plain = reference(torch.from_numpy(x), t, torch.from_numpy(context)).sample.numpy()
    theirs = {module: theirs_of(module, pictures[0])
              for module in ("reference_adain", "reference_adain+attn", "reference_only")}
    for module in ("reference_adain", "reference_adain+attn"):  # reference_only: its own test
        assert_close(ours_of(module, pictures[0]), theirs[module], tol=TOL)
    visible = 0.05 * np.abs(plain).mean()
    adain_only, both, attention = theirs.values()
    assert np.abs(adain_only - plain).mean() > visible  # AdaIN acts
    assert np.abs(both - adain_only).mean() > visible and np.abs(both - attention).mean() > visible
    other = theirs_of("reference_adain", pictures[1])
    assert np.abs(other - adain_only).mean() > visible  # the reference picture matters
