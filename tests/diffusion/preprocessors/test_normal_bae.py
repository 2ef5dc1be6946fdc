"""normal_bae against controlnet_aux's NNET (its encoder geffnet's tf_efficientnet, its decoder)
on the same random network saved as scannet.pt is ({"model": ...} under DataParallel's
`module.`), through the extension's steps written out (its NormalBaeDetector imports
torchvision, which the reference environment lacks)."""

from __future__ import annotations

import importlib
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is a test-only reference "
                                        "(extra: reference)")
torch = pytest.importorskip("torch", reason="torch is a test-only reference (extra: reference)")
from controlnet_aux_ref import controlnet_aux  # noqa: E402
from sd_tiny import randomized  # noqa: E402

import gpucore  # noqa: E402
from diffusion.loaders.control import annotator_file  # noqa: E402
from diffusion.preprocessors import normal, preprocess  # noqa: E402

# geffnet's activations are torch.jit.script functions, which torch 2.13 calls deprecated
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

decoder = controlnet_aux("normalbae.nets.submodules.decoder", bare=("normalbae",))
encoder = controlnet_aux("normalbae.nets.submodules.encoder", bare=("normalbae",))


def _narrow_nnet() -> Any:
    """NNET with B5's stage widths (the decoder's skips read them) but fewer blocks per stage
    (depth 0.5), a 128-wide head and up1, and up2..up4 at the widths its forward spells
    (512, 256, 128): a fifth of the weights, the same code."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(Path(decoder.__file__).parent / "efficientnet_repo"))
        builder = importlib.import_module("geffnet.efficientnet_builder")
        geffnet = importlib.import_module("geffnet.gen_efficientnet")
    arch = [["ds_r1_k3_s1_e1_c16_se0.25"], ["ir_r2_k3_s2_e6_c24_se0.25"],
            ["ir_r2_k5_s2_e6_c40_se0.25"], ["ir_r3_k3_s2_e6_c80_se0.25"],
            ["ir_r3_k5_s1_e6_c112_se0.25"], ["ir_r4_k5_s2_e6_c192_se0.25"],
            ["ir_r1_k3_s1_e6_c320_se0.25"]]
    backbone = geffnet.GenEfficientNet(
        builder.decode_arch_def(arch, 0.5), num_features=128, stem_size=32,
        channel_multiplier=1.6, act_layer=builder.get_act_layer("swish"),
        norm_kwargs={"eps": 1e-3}, pad_type="same")
    backbone.global_pool = backbone.classifier = torch.nn.Identity()
    head = decoder.Decoder(types.SimpleNamespace(sampling_ratio=0.4, importance_ratio=0.7,
                                                 architecture="BN"))
    head.conv2 = torch.nn.Conv2d(128, 128, 1)
    for name, inputs, outputs in (("up1", 128 + 176, 128), ("up2", 128 + 64, 512),
                                  ("up3", 512 + 40, 256), ("up4", 256 + 24, 128)):
        setattr(head, name, decoder.UpSampleBN(skip_input=inputs, output_features=outputs))

    class Nnet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = torch.nn.Module()
            self.encoder.original_model = backbone
            self.decoder = head

        def forward(self, x: Any) -> Any:
            return self.decoder(encoder.Encoder.forward(self.encoder, x))

    network = randomized(Nnet().eval(), 1, scale=0.2)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                shape = module.weight.shape
                module.weight.copy_(1 + 0.2 * torch.randn(shape, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_var.uniform_(0.5, 1.5, generator=generator)
    return network


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    folder = tmp_path_factory.mktemp("annotators")
    (folder / "normal_bae").mkdir()
    model = _narrow_nnet()
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    torch.save({"model": state}, folder / "normal_bae" / "scannet.pt")
    return model, folder


def test_normal_bae_equals_the_extensions_steps(first_device: gpucore.Device,
                                                network: tuple[Any, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """32x96 (multiples of the network's 32, not of the extension's 64): the colours before
    rounding (taken on their way through, one network run) to float32 error, the uint8 map
    within one level."""
    model, folder = network
    monkeypatch.setenv(annotator_file.ENV_VAR, str(folder))
    rng = np.random.default_rng(3)
    image = cv2.resize(rng.integers(0, 256, (8, 24, 3), dtype=np.uint8), (96, 32),
                       interpolation=cv2.INTER_CUBIC)
    with torch.no_grad():
        pixels = torch.from_numpy(image).float().permute(2, 0, 1)[None] / 255.0
        mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
        normals = model((pixels - mean) / std)[0][-1][:, :3]
        normals = ((normals + 1) * 0.5).clip(0, 1)[0].permute(1, 2, 0).numpy()
    want = normals * 255.0
    colours = []
    unrounded = normal.normal_map
    monkeypatch.setattr(normal, "normal_map", lambda image, *, device=None: colours.append(
        unrounded(image, device=device)) or colours[-1])
    got = preprocess("normal_bae", image, device=first_device)
    np.testing.assert_allclose(colours[0], want, atol=1e-3)
    assert want.std() > 20  # the picture matters
    assert got.shape == (32, 96, 3)
    assert np.abs(got.astype(int) - want.clip(0, 255).astype(np.uint8)).max() <= 1


@pytest.mark.nodevice
def test_missing_file_names_it_and_the_folder(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusion.loaders.errors import WeightsError

    monkeypatch.setenv(annotator_file.ENV_VAR, str(tmp_path))
    with pytest.raises(WeightsError) as caught:
        preprocess("normal_bae", np.zeros((32, 32, 3), np.uint8))
    assert "scannet.pt" in str(caught.value) and str(tmp_path / "normal_bae") in str(caught.value)
