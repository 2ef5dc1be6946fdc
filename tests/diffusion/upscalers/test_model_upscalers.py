"""ESRGAN / Real-ESRGAN upscalers on gpustd against spandrel on torch CPU (random weights, tiny
networks, 24x20 images), tiled against untiled, and the files they come in."""

from __future__ import annotations

import re
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")


def _spandrel():
    """spandrel, importable without torchvision: only two architectures we never load (LaMa,
    RestoreFormer) import it, and the only torchvision wheel for this torch is a CUDA build.
    The stand-in is gone again once spandrel is imported: transformers, imported later by other
    tests, asks importlib for torchvision's spec and fails on a module without one."""
    stubs = {}
    if "torchvision" not in sys.modules:
        vision = types.ModuleType("torchvision")
        vision.transforms = types.ModuleType("torchvision.transforms")
        functional = types.ModuleType("torchvision.transforms.functional")
        functional.InterpolationMode = functional.rotate = functional.normalize = None
        vision.transforms.functional = functional
        stubs = {"torchvision": vision, "torchvision.transforms": vision.transforms,
                 "torchvision.transforms.functional": functional}
        sys.modules.update(stubs)
    try:
        return pytest.importorskip("spandrel", reason="test-only reference (extra: reference)")
    finally:
        for name, module in stubs.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


spandrel = _spandrel()
from spandrel.architectures.Compact import Compact  # noqa: E402
from spandrel.architectures.ESRGAN import ESRGAN  # noqa: E402

from diffusion.loaders import WeightsError  # noqa: E402
from diffusion.upscalers.models import (  # noqa: E402
    MODEL_UPSCALERS,
    ModelUpscaler,
    find_upscalers,
    load_upscaler_model,
    register_upscaler_dir,
)
from gpustd import Tensor  # noqa: E402


def _image(seed=0, height=20, width=24):
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _esrgan(scale, shuffle=None, blocks=1, features=8, seed=0):
    torch.manual_seed(seed)
    return ESRGAN(in_nc=3 * (shuffle or 1) ** 2, out_nc=3, num_filters=features,
                  num_blocks=blocks, scale=scale, shuffle_factor=shuffle).eval()


def _new_layout(old):
    """ESRGAN's old keys -> Real-ESRGAN's (BasicSR) names: an independent inverse of the
    mapping the loader and spandrel apply."""
    top = max(int(k.split(".")[1]) for k in old)
    blocks = max(int(k.split(".")[3]) for k in old if k.startswith("model.1.sub."))
    new = {}
    for key, value in old.items():
        if m := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(\w+)", key):
            new[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
            continue
        index, kind = int(key.split(".")[1]), key.split(".")[-1]
        name = {0: "conv_first", top - 2: "conv_hr", top: "conv_last"}.get(index)
        if key.startswith(f"model.1.sub.{blocks}."):
            name = "conv_body"
        elif name is None:
            name = f"conv_up{index // 3}"
        new[f"{name}.{kind}"] = value
    return new


def _ours(state, device, x):
    model = load_upscaler_model({k: v.numpy() for k, v in state.items()}, device=device)
    return model, model(Tensor.from_numpy(x.numpy(), device=device)).numpy()


@pytest.mark.parametrize(("layout", "scale", "shuffle"), [
    ("new", 4, None), ("old", 8, None), ("new", 4, 2), ("old", 4, 4)],
    ids=["x4plus-new", "x8-old", "x2plus-unshuffle", "x1-unshuffle"])
def test_rrdbnet_equals_spandrel(first_device, layout, scale, shuffle):
    net = _esrgan(scale, shuffle)
    with torch.no_grad():  # away from init, so a swapped tensor shows
        for param in net.parameters():
            param.mul_(1.5)
    state = net.state_dict()
    if layout == "new":
        state = {"params_ema": _new_layout(state)}["params_ema"]
    reference = spandrel.ModelLoader().load_from_state_dict(state)
    x = _image()
    with torch.no_grad():
        want = reference.model(x).numpy()
    model, got = _ours(state, first_device, x)
    assert model.scale == reference.scale and got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_compact_equals_spandrel(first_device):
    x = _image(1)
    for scale in (1, 2, 4):
        torch.manual_seed(scale)
        net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale).eval()
        with torch.no_grad():
            for param in net.parameters():  # PReLU slopes start equal: make them differ
                param.copy_(torch.randn(param.shape) * 0.3)
            want = spandrel.ModelLoader().load_from_state_dict(net.state_dict()).model(x).numpy()
        model, got = _ours(net.state_dict(), first_device, x)
        assert model.scale == scale and got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), scale


def test_tiled_equals_untiled_and_files(first_device, tmp_path):
    torch.manual_seed(3)
    compact = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4)
    torch.save({"params": compact.state_dict()}, tmp_path / "realesr-general-x4v3.pth")
    # a Real-ESRGAN release's layout: new names under params_ema, as .pth
    torch.save({"params_ema": _new_layout(_esrgan(4).state_dict()), "params": {}},
               tmp_path / "RealESRGAN_x4plus.pth")
    torch.save({"conv": torch.zeros(1)}, tmp_path / "other.pth")
    assert find_upscalers(tmp_path) == {
        "R-ESRGAN 4x+": tmp_path / "RealESRGAN_x4plus.pth",
        "R-ESRGAN General 4xV3": tmp_path / "realesr-general-x4v3.pth",
        "other": tmp_path / "other.pth"}
    image = (_image(2, 21, 26)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    # (the tiling is the network's business only through its receptive radius: 3 convs here)
    path = tmp_path / "realesr-general-x4v3.pth"
    whole = ModelUpscaler("x", path, first_device, np.float32, tile=0)
    tiled = ModelUpscaler("x", path, first_device, np.float32, tile=13, pad=6)
    once = whole.run(image)
    assert once.shape == (84, 104, 3)
    assert np.abs(tiled.run(image).astype(int) - once).max() <= 1
    if first_device.has_f16:  # "auto": float16 on the matrix units, a grey level or two off
        half = ModelUpscaler("x", path, first_device, tile=13, pad=6)
        assert half.model().dtype == np.float16
        assert np.abs(half.run(image).astype(int) - once).max() <= 2
    # the WebUI's rule: a multiple of 8 of the target, Lanczos for the last step
    assert whole.upscale(image, 2).shape == (40, 48, 3)
    with pytest.raises(WeightsError, match=r"other\.pth: not an upscaler"):
        load_upscaler_model(tmp_path / "other.pth")
    before = dict(MODEL_UPSCALERS)  # the process-wide registry, restored after
    try:
        assert "R-ESRGAN 4x+" in register_upscaler_dir(tmp_path, device=first_device)
        assert MODEL_UPSCALERS["R-ESRGAN 4x+"].scale == 4
    finally:
        MODEL_UPSCALERS.clear()
        MODEL_UPSCALERS.update(before)


def test_scale_one_runs_the_network_and_small_targets(first_device, tmp_path):
    """At scale 1 the WebUI runs the network once (1x models: denoisers, deJPEG) before Lanczos
    fits the size; a target under 8x8 is refused before the network runs, in words."""
    from PIL import Image

    from diffusion.upscalers.by_name import upscale

    torch.manual_seed(3)
    compact = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4)
    torch.save({"params": compact.state_dict()}, tmp_path / "c.pth")
    image = (_image(2, 21, 26)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    model = ModelUpscaler("c", tmp_path / "c.pth", first_device, np.float32, tile=0)
    want = np.asarray(Image.fromarray(model.run(image)).resize((24, 16),
                                                               Image.Resampling.LANCZOS))
    assert np.array_equal(model.upscale(image, 1), want)
    before = dict(MODEL_UPSCALERS)
    try:
        MODEL_UPSCALERS["c"] = model
        with pytest.raises(ValueError, match="gives less than 8x8"):
            upscale(image[:1], "c", 4)
    finally:
        MODEL_UPSCALERS.clear()
        MODEL_UPSCALERS.update(before)
