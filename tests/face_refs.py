"""The face-restoration tests' references: spandrel (GFPGAN), spandrel_extra_arches
(CodeFormer) and facexlib (RetinaFace, the parsing net, FaceRestoreHelper), importable without
torchvision, whose only wheel for this torch is a CUDA build. The stand-in gives what these use
of it: `IntermediateLayerGetter`, ResNet-50 under torchvision's key names, `normalize`; it is
gone again once they are imported (transformers, imported later by other tests, asks importlib
for torchvision's spec and fails on a module without one)."""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")
nn = torch.nn


class IntermediateLayerGetter(nn.ModuleDict):
    """torchvision.models._utils.IntermediateLayerGetter: the named children run in order,
    the outputs of those in `return_layers` returned under their new names."""

    def __init__(self, model, return_layers):
        wanted, layers = dict(return_layers), OrderedDict()
        for name, module in model.named_children():
            layers[name] = module
            wanted.pop(name, None)
            if not wanted:
                break
        super().__init__(layers)
        self.return_layers = dict(return_layers)

    def forward(self, x):
        out = OrderedDict()
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 bottleneck (stride on the 3x3 conv)."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """torchvision.models.resnet50's layout and key names."""

    def __init__(self, pretrained=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for index, (planes, blocks, stride) in enumerate(
                [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=1):
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
            layers = [Bottleneck(inplanes, planes, stride, downsample)]
            inplanes = planes * 4
            layers += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            setattr(self, f"layer{index}", nn.Sequential(*layers))


def _nms(boxes, scores, iou_threshold):
    """torchvision.ops.nms: greedy, best score first, IoU of (x2 - x1) * (y2 - y1) areas."""
    order = torch.argsort(scores, descending=True, stable=True)
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.numel():
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= iou_threshold]
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.int64)


def _normalize(tensor, mean, std, inplace=False):
    mean = torch.as_tensor(mean).view(-1, 1, 1)
    std = torch.as_tensor(std).view(-1, 1, 1)
    return tensor.sub_(mean).div_(std) if inplace else (tensor - mean) / std


@contextlib.contextmanager
def torchvision_stub():
    """The stand-in as `torchvision` while the block runs (facexlib imports ResNet-50 when a
    RetinaFace is built), unless a real torchvision is imported already."""
    stubs, before = {}, {}
    if sys.modules.get("torchvision") is None:  # absent (or blocked: None)
        names = ["torchvision", "torchvision.ops", "torchvision.models",
                 "torchvision.models._utils", "torchvision.transforms",
                 "torchvision.transforms.functional"]
        stubs = {name: types.ModuleType(name) for name in names}
        stubs["torchvision.models._utils"].IntermediateLayerGetter = IntermediateLayerGetter
        stubs["torchvision.models"].resnet50 = ResNet50
        stubs["torchvision.models"]._utils = stubs["torchvision.models._utils"]
        functional = stubs["torchvision.transforms.functional"]
        functional.normalize = _normalize
        functional.InterpolationMode = functional.rotate = None
        stubs["torchvision.transforms"].functional = functional
        stubs["torchvision.ops"].nms = _nms
        stubs["torchvision"].ops = stubs["torchvision.ops"]
        stubs["torchvision"].models = stubs["torchvision.models"]
        stubs["torchvision"].transforms = stubs["torchvision.transforms"]
        before = {name: sys.modules[name] for name in stubs if name in sys.modules}
        sys.modules.update(stubs)
    try:
        yield
    finally:
        for name, module in stubs.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
        sys.modules.update(before)


def _import_references():
    with torchvision_stub():
        modules = {}
        for name in ("spandrel", "spandrel_extra_arches", "facexlib"):
            modules[name] = pytest.importorskip(
                name, reason="test-only reference (extra: reference)")
        # the modules that import torchvision themselves, while the stand-in is there
        for name in ("facexlib.detection.retinaface", "facexlib.parsing.parsenet",
                     "facexlib.utils.face_restoration_helper",
                     "spandrel_extra_arches.architectures.CodeFormer"):
            modules[name] = importlib.import_module(name)
        return modules


references = _import_references()


def tiny_gfpgan(seed: int = 0, *, size: int = 512, sft_half: bool = True):
    """GFPGANv1Clean at `size` with a sixteenth of the real widths and a 32-wide style, random
    weights (the noise strengths and SFT convs large enough to matter)."""
    torch.manual_seed(seed)
    from spandrel.architectures.GFPGAN import GFPGAN

    model = GFPGAN(out_size=size, num_style_feat=32, channel_multiplier=2, narrow=1 / 16,
                        sft_half=sft_half).eval()
    with torch.no_grad():
        for name, value in model.named_parameters():
            if name.endswith(".weight") and value.numel() == 1:  # noise injection strength
                value.fill_(0.3)
            elif "condition_" in name or name.endswith("bias"):
                value.copy_(torch.randn_like(value) * 0.1)
    return model


def tiny_codeformer(seed: int = 0):
    """spandrel_extra_arches' CodeFormer with its VQGAN narrowed and shortened (32 features,
    two downsamples: 64x64 faces to the 16x16 latents), a 64-wide two-layer transformer
    and a 64-entry codebook; the fusion points where the real layout's rule puts them."""
    from spandrel_extra_arches.architectures.CodeFormer.__arch import codeformer as arch

    torch.manual_seed(seed)
    with torch.device("meta"):  # the full-size VQGAN it builds first is replaced
        model = arch.CodeFormer(dim_embd=64, n_layers=2, codebook_size=64,
                                connect_list=["32", "64"])
    mult = [1, 2, 4]
    model.encoder = arch.Encoder(3, 32, 256, mult, 2, 64, [16])
    model.generator = arch.Generator(32, mult, 2, 64, [16], 256)
    model.fuse_convs_dict = torch.nn.ModuleDict(
        {size: arch.Fuse_sft_block(ch, ch) for size, ch in (("32", 64), ("64", 32))})
    model.fuse_encoder_block = {"64": 2, "32": 5}
    model.fuse_generator_block = {"32": 9, "64": 12}
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for name, value in model.named_parameters():
            if value.ndim == 1:  # biases, and norms' weights near 1
                value.copy_(torch.randn_like(value) * 0.1 + name.endswith("weight"))
            else:
                value.copy_(torch.randn_like(value) / value[0].numel() ** 0.5)
        model.idx_pred_layer[1].weight.mul_(30)  # clear winners among the codes
        model.position_emb.normal_()
    return model.eval()


def tiny_parsenet(seed: int = 0, size: int = 64):
    """facexlib's ParseNet narrowed (32..64 channels, two residual blocks), random weights and
    BatchNorm statistics of a random picture."""
    from facexlib.parsing.parsenet import ParseNet

    torch.manual_seed(seed)
    model = ParseNet(in_size=size, out_size=size, min_feat_size=16, base_ch=32, res_depth=2,
                     ch_range=[32, 64])
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0
            nn.init.normal_(module.weight, 1.0, 0.2)
    with torch.no_grad():
        model.train()(torch.rand(1, 3, size, size) * 2 - 1)
    return model.eval()


def tiny_retinaface(seed: int = 0):
    """facexlib's RetinaFace on MobileNet-0.25 (its small release), random weights."""
    from facexlib.detection.retinaface import RetinaFace

    torch.manual_seed(seed)
    with torchvision_stub():
        return RetinaFace(network_name="mobile0.25", device="cpu").eval()


def write_face_models(models: Path) -> Path:
    """The WebUI's face restoration files under `models` (GFPGAN/GFPGANv1.4.pth,
    Codeformer/codeformer-v0.1.0.pth, facexlib/detection_mobilenet0.25_Final.pth and
    parsing_parsenet.pth) with the tiny random networks above, restoring 64x64 faces."""
    files = {"GFPGAN/GFPGANv1.4.pth": {"params_ema": tiny_gfpgan(size=64).state_dict()},
             "Codeformer/codeformer-v0.1.0.pth": {"params_ema": tiny_codeformer().state_dict()},
             "facexlib/detection_mobilenet0.25_Final.pth": tiny_retinaface().state_dict(),
             "facexlib/parsing_parsenet.pth": tiny_parsenet().state_dict()}
    for name, state in files.items():
        (models / name).parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, models / name)
    return models

