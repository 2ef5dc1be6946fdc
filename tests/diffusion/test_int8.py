"""`--int8` (diffusion.pipelines.int8): the bundled model's picture with its UNet's linear
layers W8A8 against the same picture in float16 (a stated tolerance, and a visible change:
the int8 path ran), the infotext's field, the CLI and server options, the refusal of a
pipeline without the mode."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import host_variant_on_first_adapter
from safetensors.numpy import save_file

import diffusion
import gpucore
from diffusion.cli.main import build_parser
from diffusion.infotext import format_infotext
from diffusion.models.int8 import calibrate, quantize_linears, targets
from diffusion.pipelines.int8 import use_int8
from diffusion.server.jobs.loader import PipelineLoader
from diffusion.server.settings import ServerSettings
from gpustd import Tensor
from gpustd.nn import Linear, Module, ModuleList, deferred
from gpustd.nn.offload import is_offloaded, restore


def _attention_lora(unet: Any, folder: Path, scale: float = 0.5) -> None:
    """A kohya LoRA (rank 2, random) of every attention projection of `unet`, as
    folder/tiny.safetensors: big enough to change the picture far more than int8 does."""
    rng = np.random.default_rng(5)
    state = {}
    for key, layer in targets(unet):
        if "attn" in key:
            out, width = layer.weight.shape
            name = "lora_unet_" + key.replace(".", "_")
            state[f"{name}.lora_down.weight"] = (rng.standard_normal((2, width)) * scale
                                                 / np.sqrt(width)).astype(np.float32)
            state[f"{name}.lora_up.weight"] = (rng.standard_normal((out, 2)) * scale
                                               ).astype(np.float32)
            state[f"{name}.alpha"] = np.array(2.0, np.float32)
    save_file(state, str(folder / "tiny.safetensors"))


def _pixels(result: Any) -> np.ndarray:
    return result.images[0].astype(np.float64)


def test_bundled_picture_under_int8_stays_near_float(device: gpucore.Device,
                                                     tmp_path: Path) -> None:
    """In the model's own dtype ("auto": float32 on CI's adapters, whose float16 kernels
    would be a minute's compile more; float16 on a GPU under Dawn). With a LoRA in the
    prompt the int8 picture stays as near the float one with that LoRA; the request after
    it, without the LoRA, is the plain int8 picture bit for bit."""
    host_variant_on_first_adapter(device, "the int8 picture")
    pipe = diffusion.load_pipeline(dtype="auto", device=device)
    settings = dict(steps=2, seed=3, width=64, height=64)
    prompt, lora = "a red circle on a blue square", "<lora:tiny:1>a red circle on a blue square"
    _attention_lora(pipe.unet, tmp_path)
    pipe.lora_dir = tmp_path
    want = pipe.generate(prompt, **settings)
    want_lora = _pixels(pipe.generate(lora, **settings))  # taken off again by use_int8
    layers = len(targets(pipe.unet))
    note = use_int8(pipe)
    assert note.startswith(f"int8: {layers} linear layers of the UNet run W8A8")
    assert layers > 20 and not targets(pipe.unet)  # every target now holds int8 weights
    got = pipe.generate(prompt, **settings)
    a, b = (r.images[0].astype(np.float64) for r in (want, got))
    diff = np.abs(a - b)
    psnr = 10 * np.log10(255 ** 2 / (diff ** 2).mean())
    # int8 changes the picture visibly, but little (lavapipe, float32: see the assertion's
    # message for the figures)
    assert diff.mean() > 0.1 and diff.mean() < 8 and psnr > 22, (diff.mean(), psnr)
    assert got.settings["int8"] == "W8A8" and "int8" not in want.settings
    assert "Int8: W8A8" in format_infotext(got.settings)
    assert use_int8(pipe).startswith("int8: 0 linear layers")  # once only
    with pytest.raises(ValueError, match="--int8 smooth: the UNet's step runs captured"):
        use_int8(pipe, calibration=lambda: None)
    # the LoRA on the int8 layers: merged into them and quantized again for the request
    with_lora = pipe.generate(lora, **settings)
    assert with_lora.settings["lora_hashes"].startswith("tiny: ")
    assert with_lora.settings["int8"] == "W8A8"
    off = np.abs(_pixels(with_lora) - want_lora).mean()
    effect = np.abs(_pixels(with_lora) - b).mean()
    assert off < 8 and effect > 4 * 8, (off, effect)  # (lavapipe: 3.2 and 37)
    again = pipe.generate(prompt, **settings)
    assert np.array_equal(again.images[0], got.images[0])  # the plain int8 weights, restored


@pytest.mark.nodevice
def test_options_and_refusal() -> None:
    parser = build_parser()
    assert parser.parse_args(["txt2img", "--prompt", "a cat", "--int8"]).int8 == "plain"
    assert parser.parse_args(["txt2img", "--prompt", "a cat", "--int8", "smooth"]).int8 == \
        "smooth"
    assert not parser.parse_args(["txt2img", "--prompt", "a cat"]).int8
    assert parser.parse_args(["serve", "--int8"]).int8
    with pytest.raises(ValueError, match="wan models have no W8A8 mode"):
        use_int8(SimpleNamespace(family="wan"))
    # the server's loader applies the setting to every pipeline it loads
    loader = PipelineLoader(ServerSettings(int8=True),
                            build=lambda path, **where: SimpleNamespace(family="wan"))
    with pytest.raises(ValueError, match="wan models have no W8A8 mode"):
        loader(Path("model"))
    assert PipelineLoader(ServerSettings(), build=lambda path, **where: "as loaded")(
        Path("model")) == "as loaded"


class _Block(Module):
    def __init__(self, device: gpucore.Device, dtype: type) -> None:
        self.ff = Linear(16, 24, dtype=dtype, device=device)
        self.out = Linear(24, 16, dtype=dtype, device=device)
        self.norm1 = SimpleNamespace()
        self.img_mod = ModuleList([Linear(16, 32, dtype=dtype, device=device)])

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.ff(x))


class _Net(Module):
    def __init__(self, device: gpucore.Device, dtype: type) -> None:
        self.proj_in = Linear(16, 16, dtype=dtype, device=device)
        self.blocks = ModuleList([_Block(device, dtype) for _ in range(2)])
        self.time_embed = ModuleList([Linear(16, 16, dtype=dtype, device=device)])

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def test_calibrated_smoothing_of_a_network(device: gpucore.Device) -> None:
    """targets skips the top level, modulations and embedders; calibrate records each target's
    input range (an outlier channel 40x the others), quantize_linears smooths with it."""
    host_variant_on_first_adapter(device, "the int8 calibration")
    dtype = np.float16 if device.has_f16 else np.float32
    net = _Net(device, dtype)
    rng = np.random.default_rng(4)
    state = {k: (rng.standard_normal(v.shape) / 4).astype(dtype)
             for k, v in net.named_parameters()}
    net.load_state_dict(state)
    assert [k for k, _ in targets(net)] == ["blocks.0.ff", "blocks.0.out", "blocks.1.ff",
                                            "blocks.1.out"]
    x = rng.standard_normal((50, 16)).astype(np.float32)
    x[:, 3] *= 40
    xt = Tensor.from_numpy(x.astype(dtype), device=device)
    want = net(xt).numpy().astype(np.float64)
    ranges = calibrate(net, lambda: net(xt))
    np.testing.assert_allclose(ranges["blocks.0.ff"], np.abs(x.astype(dtype)).max(0), rtol=1e-3)
    assert "forward" not in vars(net.blocks[0].ff)  # the recorders are gone
    assert quantize_linears(net, ranges) == 4
    assert net.blocks[0].ff.weight.smooth is not None
    assert type(net.blocks[0].img_mod[0].weight) is Tensor  # a modulation stays float
    got = net(xt).numpy().astype(np.float64)
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    # loaded to host memory for a memory mode (LoadOptions.offload): each layer comes in to be
    # quantized and its bias goes back; the same int8 bytes, the same output once restored
    with deferred():
        away = _Net(device, dtype)
    away.load_state_dict(state, to_host=True)
    assert quantize_linears(away, ranges) == 4
    for (_, mine), (_, theirs) in zip(targets(net), targets(away), strict=True):
        assert theirs.bias is not None and is_offloaded(theirs)
        for a, b in zip(mine.weight.raw(), theirs.weight.raw(), strict=True):
            np.testing.assert_array_equal(a, b)
    restore(away)
    np.testing.assert_array_equal(away(xt).numpy(), got.astype(dtype))
