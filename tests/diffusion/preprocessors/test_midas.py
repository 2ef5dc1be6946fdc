"""depth_midas / normal_midas against transformers' DPTForDepthEstimation with a hybrid config
(MiDaS v3's DPT-Hybrid: a BiT ResNet stem under a ViT, the "project" readout) on one random
network in DPT-Hybrid's real nesting (ResNet stages of 3, 4 and 9 blocks, 12 ViT blocks; tiny
widths), saved as dpt_hybrid-midas-501f0c75.pt under MiDaS's own key names (the map below is
written from MiDaS's dpt_depth.py / vit.py / blocks.py and timm's ResNetV2 names), and the maps
against controlnet_aux's MidasDetector.__call__ (the extension's apply_midas, line for line)
imported with the network as its model: its `api` module, which imports torchvision and timm, is
replaced by a stand-in before the import.

transformers' DPT-Hybrid differs from MiDaS's in two details the reference works around: its
ViT LayerNorms default to eps 1e-12 (timm's ViT: 1e-6; set here), and it reshapes the tokens to
a square grid (MiDaS: the picture's h/16 x w/16), so a picture that is not square goes through
its submodules with the grid given (`_dpt_depth`)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is a test-only reference "
                                        "(extra: reference)")
torch = pytest.importorskip("torch", reason="torch is a test-only reference (extra: reference)")
transformers = pytest.importorskip("transformers", reason="test-only reference")
from controlnet_aux_ref import controlnet_aux  # noqa: E402
from sd_tiny import randomized  # noqa: E402
from support import assert_close  # noqa: E402

import gpucore  # noqa: E402
from diffusion.loaders.control import annotator_file  # noqa: E402
from diffusion.loaders.errors import WeightsError  # noqa: E402
from diffusion.preprocessors import midas, module_detail, preprocess  # noqa: E402
from diffusion.preprocessors.resize import resize_with_pad  # noqa: E402

FILE = "dpt_hybrid-midas-501f0c75.pt"

# MiDaS's names (left) for transformers' (right), by pattern
_KEYS = [
    (r"dpt\.embeddings\.cls_token", "pretrained.model.cls_token"),
    (r"dpt\.embeddings\.position_embeddings", "pretrained.model.pos_embed"),
    (r"dpt\.embeddings\.projection\.(.*)", r"pretrained.model.patch_embed.proj.\1"),
    (r"dpt\.embeddings\.backbone\.bit\.embedder\.convolution\.(.*)",
     r"pretrained.model.patch_embed.backbone.stem.conv.\1"),
    (r"dpt\.embeddings\.backbone\.bit\.embedder\.norm\.(.*)",
     r"pretrained.model.patch_embed.backbone.stem.norm.\1"),
    (r"dpt\.embeddings\.backbone\.bit\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(.*)",
     r"pretrained.model.patch_embed.backbone.stages.\1.blocks.\2.\3"),
    (r"dpt\.encoder\.layer\.(\d+)\.layernorm_before\.(.*)", r"pretrained.model.blocks.\1.norm1.\2"),
    (r"dpt\.encoder\.layer\.(\d+)\.layernorm_after\.(.*)", r"pretrained.model.blocks.\1.norm2.\2"),
    (r"dpt\.encoder\.layer\.(\d+)\.attention\.output\.dense\.(.*)",
     r"pretrained.model.blocks.\1.attn.proj.\2"),
    (r"dpt\.encoder\.layer\.(\d+)\.intermediate\.dense\.(.*)",
     r"pretrained.model.blocks.\1.mlp.fc1.\2"),
    (r"dpt\.encoder\.layer\.(\d+)\.output\.dense\.(.*)", r"pretrained.model.blocks.\1.mlp.fc2.\2"),
    (r"dpt\.layernorm\.(.*)", r"pretrained.model.norm.\1"),
    (r"neck\.reassemble_stage\.readout_projects\.(\d)\.0\.(.*)",
     lambda m: f"pretrained.act_postprocess{int(m[1]) + 1}.0.project.0.{m[2]}"),
    (r"neck\.reassemble_stage\.layers\.(\d)\.projection\.(.*)",
     lambda m: f"pretrained.act_postprocess{int(m[1]) + 1}.3.{m[2]}"),
    (r"neck\.reassemble_stage\.layers\.(\d)\.resize\.(.*)",
     lambda m: f"pretrained.act_postprocess{int(m[1]) + 1}.4.{m[2]}"),
    (r"neck\.convs\.(\d)\.(.*)", lambda m: f"scratch.layer{int(m[1]) + 1}_rn.{m[2]}"),
    (r"neck\.fusion_stage\.layers\.(\d)\.projection\.(.*)",
     lambda m: f"scratch.refinenet{4 - int(m[1])}.out_conv.{m[2]}"),
    (r"neck\.fusion_stage\.layers\.(\d)\.residual_layer(\d)\.convolution(\d)\.(.*)",
     lambda m: f"scratch.refinenet{4 - int(m[1])}.resConfUnit{m[2]}.conv{m[3]}.{m[4]}"),
    (r"head\.head\.(\d)\.(.*)", r"scratch.output_conv.\1.\2"),
]


def _midas_state(model: Any) -> dict[str, Any]:
    """transformers' weights under MiDaS's names: q, k and v joined into timm's qkv, and the
    ViT's classifier (which the file holds and the network does not use) added."""
    state, qkv = {}, {}
    for key, value in model.state_dict().items():
        if m := re.fullmatch(r"dpt\.encoder\.layer\.(\d+)\.attention\.attention\.(\w+)\.(\w+)",
                             key):
            qkv.setdefault(f"pretrained.model.blocks.{m[1]}.attn.qkv.{m[3]}", {})[m[2]] = value
            continue
        renamed = [re.sub(f"^{pattern}$", to, key) for pattern, to in _KEYS
                   if re.fullmatch(pattern, key)]
        assert len(renamed) == 1, key
        state[renamed[0]] = value
    for key, parts in qkv.items():
        state[key] = torch.cat([parts["query"], parts["key"], parts["value"]])
    dim = state["pretrained.model.cls_token"].shape[-1]
    state["pretrained.model.head.weight"] = torch.zeros(1000, dim)
    state["pretrained.model.head.bias"] = torch.zeros(1000)
    return state


def _tiny_dpt() -> Any:
    bit = transformers.BitConfig(
        embedding_size=32, hidden_sizes=[128, 128, 256], depths=[3, 4, 9], global_padding="same",
        layer_type="bottleneck", out_features=["stage1", "stage2", "stage3"],
        embedding_dynamic_padding=True, num_groups=32)
    config = transformers.DPTConfig(
        is_hybrid=True, backbone_config=bit, hidden_size=128, num_hidden_layers=12,
        num_attention_heads=2, intermediate_size=256, image_size=80, patch_size=16,
        layer_norm_eps=1e-6, backbone_out_indices=[0, 1, 8, 11], readout_type="project",
        reassemble_factors=[1, 1, 1, 0.5], neck_hidden_sizes=[128, 128, 96, 96],
        fusion_hidden_size=32, backbone_featmap_shape=[1, 256, 5, 5])
    model = randomized(transformers.DPTForDepthEstimation(config), 5, scale=0.3)
    with torch.no_grad():
        # the last conv reads ReLU'd features: positive weights keep its depth off the final
        # ReLU's zero, where a random network's map would be mostly flat
        model.head.head[4].weight.abs_()
    return model


def _dpt_depth(model: Any, x: Any) -> Any:
    """DPTForDepthEstimation's forward with the token grid h/16 x w/16 (MiDaS's forward_vit)
    and the position table resized to it."""
    embedded = model.dpt.embeddings(x, interpolate_pos_encoding=True)
    h, hooked = embedded.last_hidden_states, []
    for index, layer in enumerate(model.dpt.encoder.layer):
        h = layer(h)
        if index in model.config.backbone_out_indices[2:]:
            hooked.append(h)
    features = [*embedded.intermediate_activations, *hooked]
    return model.head(model.neck(features, x.shape[2] // 16, x.shape[3] // 16))


class _StandIn(torch.nn.Module):
    """MidasDetector's model: MiDaSInference(x) -> depth [1, H, W] (the last one kept)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model, self.depth = model, None

    def forward(self, x: Any) -> Any:
        self.depth = _dpt_depth(self.model, x)
        return self.depth


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    folder = tmp_path_factory.mktemp("annotators")
    (folder / "midas").mkdir()
    model = _tiny_dpt()
    torch.save(_midas_state(model), folder / "midas" / FILE)
    return model, folder


@pytest.fixture(scope="module")
def detector() -> Any:
    """controlnet_aux.midas.MidasDetector, its `api` (torchvision, timm) stood in for."""
    with pytest.MonkeyPatch.context() as patch:
        api = types.ModuleType("controlnet_aux.midas.api")
        api.MiDaSInference = None  # type: ignore[attr-defined]
        controlnet_aux("util")
        patch.setitem(sys.modules, "controlnet_aux.midas.api", api)
        module = controlnet_aux("midas")
    return module.MidasDetector


def _picture(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(height * width)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 5, y * 4, (x * y) % 256], axis=-1) + rng.integers(0, 40, (height, width,
                                                                                      3))
    return cv2.GaussianBlur(image.clip(0, 255).astype(np.uint8), (0, 0), 1.0)


@pytest.mark.nodevice
def test_the_reference_is_transformers_dpt_hybrid(network: tuple[Any, Path]) -> None:
    """_dpt_depth (the grid given) is DPTForDepthEstimation's own forward where that can run:
    a square picture at the position table's grid (80 x 80)."""
    reference, _ = network
    square = torch.from_numpy(
        np.random.default_rng(1).uniform(-1, 1, (1, 3, 80, 80)).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(_dpt_depth(reference, square).numpy(),
                                   reference(square).predicted_depth.numpy(), rtol=1e-6)


def test_depth_and_maps_equal_the_references(first_device: gpucore.Device,
                                             network: tuple[Any, Path], detector: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """normal_midas at the picture's own size (45 x 117, padded to 64 x 128 by repeating the
    last row and column, as the extension's pad): the network's depth (taken on its way; the
    5 x 5 position table resized to a 4 x 8 grid) equals transformers' to float32 error, the map
    MidasDetector's of the same padded picture, cut back, within one level. depth_midas through
    the extension's old name `depth` at processor_res 64 (a 64 x 117 picture, padded the same):
    MidasDetector's map within one level."""
    reference, folder = network
    monkeypatch.setenv(annotator_file.ENV_VAR, str(folder))
    stand_in = _StandIn(reference)
    extension = detector(stand_in)

    def detect(picture: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        side = min(picture.shape[:2])
        return extension(picture, bg_th=threshold, depth_and_normal=True,
                         detect_resolution=side, image_resolution=side)

    depths = []
    raw_depth = midas._raw_depth
    monkeypatch.setattr(midas, "_raw_depth", lambda *args: depths.append(raw_depth(*args))
                        or depths[-1])
    image = _picture(45, 117)
    want = detect(np.pad(image, [(0, 19), (0, 11), (0, 0)], mode="edge"), 0.3)[1][:45, :117]
    got = preprocess("normal_midas", image, threshold_a=0.3, device=first_device)
    want_depth = stand_in.depth.numpy()[0]
    assert depths[0].shape == want_depth.shape == (64, 128)
    # 40 random layers deep, torch's own float32 depth is 3e-4 of the map's size from its
    # float64 one in the flat padded rows (ours: 1.3e-4)
    assert_close(depths[0], want_depth, tol=5e-4)
    assert want_depth.std() > 0.05 * np.abs(want_depth).mean()  # the picture matters
    assert got.shape == (45, 117, 3)
    differ = np.abs(got.astype(int) - want)
    assert differ.max() <= 1 and (differ > 0).mean() < 0.02
    flat = np.all(want[:, :, 1:] == 127, axis=2)  # x and y zeroed: the background
    assert 0.05 < flat.mean() < 0.95 and want.std() > 5

    image = _picture(64, 117)
    padded, remove_pad = resize_with_pad(image, 64)
    assert padded.shape == (64, 128, 3)
    want = remove_pad(detect(padded, 0.4)[0])
    got = preprocess("depth", image, resolution=64, device=first_device)
    assert got.shape == want.shape == (64, 117, 3)
    differ = np.abs(got.astype(int) - want)
    assert differ.max() <= 1 and (differ > 0).mean() < 0.02
    assert want.std() > 20


def test_a_file_that_is_not_midas_is_named(first_device: gpucore.Device,
                                           network: tuple[Any, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _, folder = network
    state = torch.load(folder / "midas" / FILE)
    del state["scratch.refinenet2.out_conv.weight"]
    torch.save(state, tmp_path / FILE)
    monkeypatch.setenv(annotator_file.ENV_VAR, str(tmp_path))
    with pytest.raises(WeightsError, match=r"no tensor scratch\.refinenet2\.out_conv\.weight"):
        preprocess("depth_midas", np.zeros((32, 32, 3), np.uint8), device=first_device)


@pytest.mark.nodevice
def test_registered_with_the_extensions_sliders(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    detail = module_detail()
    assert [s["name"] for s in detail["depth_midas"]["sliders"]] == ["Resolution"]
    assert detail["normal_midas"]["sliders"][1] == {
        "name": "Normal Background Threshold", "value": 0.4, "min": 0.0, "max": 1.0,
        "step": 0.01}
    monkeypatch.setenv(annotator_file.ENV_VAR, str(tmp_path))
    with pytest.raises(WeightsError) as caught:
        preprocess("normal_map", np.zeros((8, 8, 3), np.uint8))
    assert FILE in str(caught.value) and str(tmp_path / "midas") in str(caught.value)
