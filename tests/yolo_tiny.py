"""Tiny YOLOv8 detection files as ultralytics writes them (`{"model": DetectionModel, ...}`,
whole modules pickled, half precision), from ultralytics' own model classes with a tiny width
multiple and random weights whose scores spread out (biases and BatchNorm statistics drawn, the
class branch scaled), so that boxes and their order depend on the weights; and `blobs`, a test
picture for them."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("YOLO_CONFIG_DIR", "/tmp/ultralytics-tests")
os.environ.setdefault("YOLO_OFFLINE", "1")
torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")


def _import_ultralytics() -> None:
    """ultralytics reads torchvision's version as it is imported; torchvision's only wheel for
    this CPU torch is a CUDA build that cannot load, so the reference goes without it (its
    model classes never use it; its NMS gets `reference_nms`)."""
    real = importlib.metadata.version

    def version(name: str) -> str:
        try:
            return real(name)
        except importlib.metadata.PackageNotFoundError:
            if name == "torchvision":
                return "0.0.0"
            raise

    importlib.metadata.version = version
    try:
        pytest.importorskip("ultralytics", reason="test-only reference (scripts/setup.sh)")
    finally:
        importlib.metadata.version = real


_import_ultralytics()

# YOLOv8n's layers with a tiny width (channels 4..64)
CONFIG = {
    "nc": 2, "depth_multiple": 0.33, "width_multiple": 0.0625, "max_channels": 1024,
    "backbone": [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [128, 3, 2]],
                 [-1, 3, "C2f", [128, True]], [-1, 1, "Conv", [256, 3, 2]],
                 [-1, 6, "C2f", [256, True]], [-1, 1, "Conv", [512, 3, 2]],
                 [-1, 6, "C2f", [512, True]], [-1, 1, "Conv", [1024, 3, 2]],
                 [-1, 3, "C2f", [1024, True]], [-1, 1, "SPPF", [1024, 5]]],
    "head": [[-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 6], 1, "Concat", [1]],
             [-1, 3, "C2f", [512]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
             [[-1, 4], 1, "Concat", [1]], [-1, 3, "C2f", [256]], [-1, 1, "Conv", [256, 3, 2]],
             [[-1, 12], 1, "Concat", [1]], [-1, 3, "C2f", [512]], [-1, 1, "Conv", [512, 3, 2]],
             [[-1, 9], 1, "Concat", [1]], [-1, 3, "C2f", [1024]],
             [[15, 18, 21], 1, "Detect", ["nc"]]],
}


def reference_nms(boxes, scores, iou):
    """Greedy NMS in torch, for ultralytics' non_max_suppression where torchvision's compiled
    ops cannot load (the CPU torch wheel pairs with no torchvision wheel of the index)."""
    order = torch.argsort(scores, descending=True, stable=True)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(1)
    keep = []
    while order.numel():
        best, rest = order[0], order[1:]
        keep.append(best)
        low = torch.maximum(boxes[best, :2], boxes[rest, :2])
        high = torch.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = (high - low).clamp(min=0).prod(1)
        order = rest[inter / (area[best] + area[rest] - inter) <= iou]
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.long)


@contextlib.contextmanager
def nms_in_torch() -> Iterator[None]:
    """ultralytics' `import torchvision` (in its NMS) answered with `reference_nms`, for the
    block only: other tests' libraries look for the real torchvision."""
    saved = sys.modules.get("torchvision")
    sys.modules["torchvision"] = types.SimpleNamespace(  # type: ignore[assignment]
        ops=types.SimpleNamespace(nms=reference_nms), __version__="0.0.0")
    try:
        yield
    finally:
        if saved is None:
            del sys.modules["torchvision"]
        else:
            sys.modules["torchvision"] = saved


def tiny_yolo(seed: int = 0, classes: int = 2, *, segment: bool = False):
    """A random tiny DetectionModel (float32, eval), its weights already rounded to half;
    `segment`: a SegmentationModel (YOLOv8-seg's head: Detect plus its mask branch)."""
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    torch.manual_seed(seed)
    config = {**CONFIG, "nc": classes}
    if segment:
        head = config["head"][-1]
        config["head"] = [*config["head"][:-1], [head[0], 1, "Segment", ["nc", 32, 256]]]
    model = (SegmentationModel if segment else DetectionModel)(config, ch=3, nc=classes,
                                                               verbose=False)
    with torch.no_grad():
        # BatchNorm statistics measured on smooth random pictures (torch's init alone lets the
        # picture's signal fade to nothing by the head), then scale and shift drawn
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
        model.train()
        smooth = torch.nn.functional.interpolate(torch.rand(4, 3, 16, 24), size=(128, 192),
                                                 mode="bilinear")
        model.model[-1].training = True
        model(smooth)
        for norm in norms:
            norm.weight.uniform_(0.8, 1.2)
            norm.bias.normal_(0, 0.2)
        head = model.model[-1]
        for i in range(head.nl):
            head.cv3[i][2].weight.mul_(0.1)
            head.cv3[i][2].bias.fill_(-1.0)
            head.cv2[i][2].weight.mul_(3)
    model.names = {i: f"class{i}" for i in range(classes)}
    return model.half().float().eval()


def write_tiny_yolo(path: Path, seed: int = 0, classes: int = 2, *, segment: bool = False):
    """`path` as ultralytics saves a trained model; returns the float model."""
    import copy

    model = tiny_yolo(seed, classes, segment=segment)
    train_args = {"imgsz": 640, "task": "segment" if segment else "detect"}
    torch.save({"model": copy.deepcopy(model).half(), "train_args": train_args,
                "date": "2026-11-26", "version": "8.3.40"}, path)
    return model


def blobs(height: int, width: int, seed: int = 1) -> np.ndarray:
    """A height x width x 3 uint8 picture of smooth blobs over noise: features that differ from
    place to place."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width] / 40.0
    base = np.stack([np.sin(xs * (c + 1)) * np.cos(ys * (2 - c)) for c in range(3)], -1)
    return np.clip(127 + 90 * base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
