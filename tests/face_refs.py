"""The face-restoration tests' references: spandrel (GFPGAN), spandrel_extra_arches
(CodeFormer) and facexlib (RetinaFace, the parsing net, FaceRestoreHelper), importable without
torchvision, whose only wheel for this torch is a CUDA build. The stand-in gives what these use
of it: `IntermediateLayerGetter`, ResNet-50 under torchvision's key names, `normalize`; it is
gone again once they are imported (transformers, imported later by other tests, asks importlib
for torchvision's spec and fails on a module without one)."""

from __future__ import annotations

import contextlib
import sys
import types
from collections import OrderedDict

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
    stubs = {}
    if "torchvision" not in sys.modules:
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
        sys.modules.update(stubs)
    try:
        yield
    finally:
        for name, module in stubs.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def _import_references():
    with torchvision_stub():
        modules = {}
        for name in ("spandrel", "spandrel_extra_arches", "facexlib"):
            modules[name] = pytest.importorskip(
                name, reason="test-only reference (extra: reference)")
        import spandrel_extra_arches.architectures.CodeFormer  # noqa: F401
        return modules


references = _import_references()
