"""T2I-Adapter single files: TencentARC's original layout (the .pth files the ControlNet
extension loads) against TencentARC's own modules (restated below from its
ldm/modules/encoders/adapter.py, random weights, torch CPU), and diffusers-named files without
a config against their diffusers folder; the canny/sketch adapters' one-channel input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")
from safetensors.numpy import save_file  # noqa: E402
from sd_tiny import randomized, state_dict  # noqa: E402
from support import assert_close  # noqa: E402
from torch import nn  # noqa: E402

import gpucore  # noqa: E402
import gpustd  # noqa: E402
from diffusion.loaders import WeightsError  # noqa: E402
from diffusion.loaders.control.catalog import load_control_model, model_kind  # noqa: E402
from diffusion.loaders.control.controlnet_file import load_t2i_adapter  # noqa: E402

# the worst element's |error| / (rms + |expected|) (support.assert_close's rule) measured on
# lavapipe and llvmpipe: 2.2e-6
TOL = 2e-5


class _Resnet(nn.Module):
    """TencentARC's ResnetBlock as its released adapters build it (sk=True, use_conv=False,
    ksize=1): in_conv only where the width changes, no skip conv, average-pool downsampling."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.in_conv = nn.Conv2d(cin, cout, 1) if cin != cout else None
        self.block1 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.block2 = nn.Conv2d(cout, cout, 1)
        self.down = nn.AvgPool2d(2, 2) if down else None

    def forward(self, x: Any) -> Any:
        if self.down is not None:
            x = self.down(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        return self.block2(torch.relu(self.block1(x))) + x


class _Adapter(nn.Module):
    """TencentARC's Adapter: PixelUnshuffle(8), conv_in, body of nums_rb blocks per level."""

    def __init__(self, channels: list[int], nums_rb: int, cin: int) -> None:
        super().__init__()
        self.unshuffle, self.channels, self.nums_rb = nn.PixelUnshuffle(8), channels, nums_rb
        self.body = nn.ModuleList([
            _Resnet(channels[i - 1] if i and not j else channels[i], channels[i], i > 0 and j == 0)
            for i in range(len(channels)) for j in range(nums_rb)])
        self.conv_in = nn.Conv2d(cin, channels[0], 3, 1, 1)

    def forward(self, x: Any) -> list[Any]:
        x, features = self.conv_in(self.unshuffle(x)), []
        for i in range(len(self.channels)):
            for j in range(self.nums_rb):
                x = self.body[i * self.nums_rb + j](x)
            features.append(x)
        return features


class _LightBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: Any) -> Any:
        return self.block2(torch.relu(self.block1(x))) + x


class _Extractor(nn.Module):
    """TencentARC's Adapter_light level (extractor): avg pool, 1x1 in, light resnets, 1x1 out."""

    def __init__(self, cin: int, mid: int, cout: int, blocks: int, down: bool) -> None:
        super().__init__()
        self.in_conv, self.out_conv = nn.Conv2d(cin, mid, 1), nn.Conv2d(mid, cout, 1)
        self.body = nn.ModuleList()
        for _ in range(blocks):
            block = _LightBlock()
            block.block1, block.block2 = nn.Conv2d(mid, mid, 3, 1, 1), nn.Conv2d(mid, mid, 3, 1, 1)
            self.body.append(block)
        self.down = down

    def forward(self, x: Any) -> Any:
        if self.down:
            x = nn.functional.avg_pool2d(x, 2, 2)
        x = self.in_conv(x)
        for block in self.body:
            x = block(x)
        return self.out_conv(x)


class _LightAdapter(nn.Module):
    def __init__(self, channels: list[int], blocks: int, cin: int) -> None:
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(8)
        self.body = nn.ModuleList([
            _Extractor(cin if i == 0 else channels[i - 1], channels[i] // 4, channels[i], blocks,
                       i > 0) for i in range(len(channels))])

    def forward(self, x: Any) -> list[Any]:
        x, features = self.unshuffle(x), []
        for level in self.body:
            x = level(x)
            features.append(x)
        return features


def _image(channels: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (1, channels, 64, 128)).astype(np.float32)


def _assert_features(ours: Any, reference: Any, image: np.ndarray, device: Any) -> None:
    with torch.no_grad():
        want = reference(torch.from_numpy(image))
    got = ours(gpustd.asarray(image, device=device))
    assert [g.shape for g in got] == [tuple(w.shape) for w in want]
    for g, w in zip(got, want):
        assert_close(g.numpy(), w.numpy(), tol=TOL)


@pytest.mark.parametrize("kind, cin, suffix", [("full", 1, ".pth"), ("full", 3, ".safetensors"),
                                               ("light", 3, ".pth")])
def test_tencentarc_files(first_device: gpucore.Device, tmp_path: Path, kind: str, cin: int,
                          suffix: str) -> None:
    """t2iadapter_canny_sd15v2-like (one channel), sketch/depth-like (three) and the light
    color adapter, as .pth (read without running the pickle) and .safetensors; through the
    control-model loader, which tells the kind from the names."""
    if kind == "full":
        reference = _Adapter([8, 16, 24, 24], 2, cin * 64)
    else:
        reference = _LightAdapter([16, 32, 64, 64], 3, cin * 64)
    reference = randomized(reference, 11)
    path = tmp_path / f"t2iadapter_{kind}{suffix}"
    if suffix == ".pth":
        torch.save(reference.state_dict(), path)
    else:
        save_file(state_dict(reference), str(path))
    assert model_kind(path) == "t2i_adapter"
    ours = load_control_model(path, device=first_device)
    assert ours.config["in_channels"] == cin and ours.config["downscale_factor"] == 8
    _assert_features(ours, reference, _image(cin, 12), first_device)


@pytest.mark.parametrize("kind", ["full_adapter", "full_adapter_xl", "light_adapter"])
def test_diffusers_named_files(first_device: gpucore.Device, tmp_path: Path,
                               kind: str) -> None:
    """A diffusers T2IAdapter saved as one file (no config.json): its config read from the
    shapes, the same features as diffusers'."""
    import diffusers

    channels = {"light_adapter": [16, 32]}.get(kind, [8, 16, 24, 24])
    reference = randomized(diffusers.T2IAdapter(
        in_channels=1 if kind == "full_adapter_xl" else 3, channels=channels,
        num_res_blocks=2, downscale_factor=16 if kind.endswith("xl") else 8,
        adapter_type=kind), 13)
    save_file(state_dict(reference), str(tmp_path / "adapter.safetensors"))
    ours = load_t2i_adapter(tmp_path / "adapter.safetensors", device=first_device)
    assert ours.config["adapter_type"] == kind
    _assert_features(ours, reference, _image(ours.config["in_channels"], 14), first_device)


@pytest.mark.nodevice
def test_other_layouts_are_refused(tmp_path: Path) -> None:
    zeros = np.zeros((4, 4, 1, 1), np.float32)
    save_file({"conv_in.weight": zeros, "body.0.block1.weight": zeros,
               "body.0.skep.weight": zeros}, str(tmp_path / "sk_false.safetensors"))
    with pytest.raises(WeightsError, match=r"sk_false\.safetensors: a T2I-Adapter layout this "
                                           r"program does not read \(body\.0\.skep\.weight"):
        load_t2i_adapter(tmp_path / "sk_false.safetensors")
    save_file({"style_embedding": zeros, "body.0.x": zeros},
              str(tmp_path / "t2iadapter_style.safetensors"))
    with pytest.raises(WeightsError, match="not the style adapter"):
        load_t2i_adapter(tmp_path / "t2iadapter_style.safetensors")


def test_one_channel_adapters_read_the_maps_first_channel(first_device: gpucore.Device,
                                                         tmp_path: Path) -> None:
    """The extension gives a canny/sketch adapter (conv_in of 64) the hint's first channel."""
    from diffusion.pipelines.control import Control, ControlUnit

    reference = randomized(_Adapter([8, 16, 24, 24], 2, 64), 15)
    torch.save(reference.state_dict(), tmp_path / "canny.pth")
    ours = load_t2i_adapter(tmp_path / "canny.pth", device=first_device)
    picture = np.random.default_rng(16).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    control = Control([ControlUnit(ours, picture, weight=0.5)], total_steps=1)
    got = control._adapter_residuals(0, control.units[0], np.arange(1), (0, 1))
    with torch.no_grad():
        want = reference(torch.from_numpy(picture[None, :, :, :1].transpose(0, 3, 1, 2)
                                          .astype(np.float32) / 255))
    for g, w in zip(got, want):
        assert_close(g.numpy(), 0.5 * w.numpy(), tol=TOL)
