"""ultralytics' YOLOv8 detection files (ADetailer's `face_yolov8n.pt`, `hand_yolov8s.pt`,
`person_yolov8n-seg.pt`...) read without running their pickle.

ultralytics saves whole modules (`{"model": DetectionModel, "train_args": ...}`): the pickle is
read with inert stand-ins for the classes of `ultralytics` and `torch.nn.modules`
(`torch_modules`), so each layer's kind, its `f` (input) and its attributes come from the file
and its tensors are read as from any PyTorch file. A segmentation model's head (Segment) gives
its boxes as Detect does, and its masks (`segment`). Layer kinds outside YOLOv8's (Conv, C2f,
SPPF, Upsample, Concat, Detect/Segment) are refused naming the kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import gpustd
from gpucore import Device

from ..loaders.errors import WeightsError
from ..loaders.formats.torch_file import TorchFile
from ..loaders.formats.torch_modules import PickledModule, module_classes
from .segment import Proto, Segment
from .yolo import SPPF, C2f, Conv, Detect, YoloLayer, YoloNetwork, join, sequence, upsample

__all__ = ["YoloFile", "check_yolo", "load_yolo"]

_PACKAGES = ("ultralytics", "torch.nn.modules")
_KINDS = ("Conv", "DWConv", "C2f", "SPPF", "Upsample", "Concat", "Detect", "Segment")
Layer = tuple[str, PickledModule, int | list[int]]  # name, module, input index ('f')


def _structure(path: Path) -> tuple[TorchFile, PickledModule, list[Layer]]:
    """The file's container and pickle (its tensors listed, none read), its model module and
    its layers, each of a kind YOLOv8 uses; WeightsError naming the file where they are not."""
    file = TorchFile(path, classes=module_classes(_PACKAGES))
    tree = file.tree
    model = tree.get("ema") or tree.get("model") if isinstance(tree, dict) else None
    if not isinstance(model, PickledModule):
        raise WeightsError(f"{path}: not an ultralytics YOLO file (no 'model' module); use a "
                           "YOLOv8 detection .pt as ADetailer does")
    try:
        modules = list(model.child("model").children())
    except KeyError:
        raise WeightsError(f"{path}: its model has no layers ('model'); the file is damaged "
                           "or not a YOLOv8 detection .pt") from None
    layers: list[Layer] = []
    for name, module in modules:
        source = module.state.get("f", -1)
        if not (isinstance(source, int) or (isinstance(source, list)
                and all(isinstance(i, int) for i in source))):
            raise WeightsError(f"{path}: layer {name} has no input index ('f')")
        if module.kind not in _KINDS:
            raise WeightsError(f"{path}: layer model.{name} is a {module.kind}, which YOLOv8 "
                               "detection does not use; use a YOLOv8 detection or "
                               "segmentation model")
        layers.append((name, module, source))
    if not layers or layers[-1][1].kind not in ("Detect", "Segment"):
        raise WeightsError(f"{path}: the model does not end with a Detect head")
    if layers[-1][1].state.get("end2end"):
        raise WeightsError(f"{path}: an end-to-end (YOLOv10) head is not supported; use a "
                           "YOLOv8 model")
    return file, model, layers


def check_yolo(path: str | Path) -> None:
    """WeightsError naming the file unless it reads as a YOLOv8 detection file: what
    YoloFile reads before its first tensor (milliseconds; nothing reaches a device), so a
    damaged file is refused before a job that needs it runs."""
    _structure(Path(path))


class YoloFile:
    """A YOLO .pt: `network` (a YoloNetwork on `device`), `names` {class index: name}."""

    def __init__(self, path: str | Path, device: Device | None = None) -> None:
        self.path = Path(path)
        file, model, layers = _structure(self.path)
        self._file, self.device = file, device
        self._prefix = "ema." if file.tree.get("ema") is model else "model."
        names = model.state.get("names") or {}
        self.names = dict(enumerate(names)) if isinstance(names, list) else dict(names)
        self.network = self._network(layers)

    def _array(self, key: str) -> np.ndarray:
        try:
            return self._file.read(self._prefix + key).astype(np.float32)
        except KeyError:
            raise WeightsError(f"{self.path}: tensor {key!r} is missing; the file is "
                               "damaged") from None

    def _conv(self, module: PickledModule, key: str) -> Conv:
        """ultralytics' Conv/DWConv (conv, bn, act) or a plain Conv2d, the BatchNorm folded."""
        if module.kind == "Conv2d":
            conv, bn, act = module, None, False
            conv_key = key
        elif module.kind in ("Conv", "DWConv"):
            conv, conv_key = module.child("conv"), f"{key}.conv"
            bn = module.state.get("_modules", {}).get("bn")
            act_kind = module.child("act").kind
            if act_kind not in ("SiLU", "Identity"):
                raise WeightsError(f"{self.path}: layer {key} has activation {act_kind}; only "
                                   "YOLOv8's SiLU is supported")
            act = act_kind == "SiLU"
        else:
            raise WeightsError(f"{self.path}: layer {key} is a {module.kind}, expected a Conv")
        weight = self._array(f"{conv_key}.weight")
        has_bias = (conv.state.get("_parameters") or {}).get("bias") is not None
        bias = self._array(f"{conv_key}.bias") if has_bias else np.zeros(weight.shape[0],
                                                                           np.float32)
        if bn is not None:
            scale = self._array(f"{key}.bn.weight") / np.sqrt(
                self._array(f"{key}.bn.running_var") + float(bn.state.get("eps", 1e-3)))
            bias = (bias - self._array(f"{key}.bn.running_mean")) * scale + \
                self._array(f"{key}.bn.bias")
            weight = weight * scale[:, None, None, None]
        stride, padding, dilation = (conv.state.get(k, (1, 1)) for k in
                                     ("stride", "padding", "dilation"))
        if len(set(stride)) != 1 or len(set(padding)) != 1 or len(set(dilation)) != 1:
            raise WeightsError(f"{self.path}: layer {key} has an asymmetric convolution")
        return Conv(self._tensor(weight), self._tensor(bias), int(stride[0]), int(padding[0]),
                    int(conv.state.get("groups", 1)), int(dilation[0]), act)

    def _tensor(self, array: np.ndarray) -> Any:
        return gpustd.asarray(np.ascontiguousarray(array, np.float32), device=self.device)

    def _chain(self, module: PickledModule, key: str) -> Any:
        if module.kind == "Sequential":
            return sequence([self._chain(child, f"{key}.{name}")
                             for name, child in module.children()])
        return self._conv(module, key)

    def _block(self, module: PickledModule, key: str) -> Any:
        kind = module.kind
        if kind in ("Conv", "DWConv"):
            return self._conv(module, key)
        if kind == "C2f":
            cv1 = self._conv(module.child("cv1"), f"{key}.cv1")
            half = int(module.state.get("c", cv1.weight.shape[0] // 2))
            w, b = cv1.weight.numpy(), cv1.bias.numpy()
            first = Conv(**{**vars(cv1), "weight": self._tensor(w[:half]),
                            "bias": self._tensor(b[:half])})
            second = Conv(**{**vars(cv1), "weight": self._tensor(w[half:]),
                             "bias": self._tensor(b[half:])})
            bottlenecks = [(self._conv(m.child("cv1"), f"{key}.m.{i}.cv1"),
                            self._conv(m.child("cv2"), f"{key}.m.{i}.cv2"),
                            bool(m.state.get("add", False)))
                           for i, m in module.child("m").children()]
            return C2f(first, second, bottlenecks, self._conv(module.child("cv2"), f"{key}.cv2"))
        if kind == "SPPF":
            size = module.child("m").state.get("kernel_size", 5)
            return SPPF(self._conv(module.child("cv1"), f"{key}.cv1"),
                        self._conv(module.child("cv2"), f"{key}.cv2"),
                        int(size[0] if isinstance(size, tuple) else size))
        if kind == "Upsample":
            if module.state.get("mode") != "nearest" or \
                    float(module.state.get("scale_factor") or 0) != 2.0:
                raise WeightsError(f"{self.path}: layer {key}: only nearest 2x upsampling is "
                                   "supported")
            return upsample
        if kind == "Concat":
            if module.state.get("d", 1) != 1:
                raise WeightsError(f"{self.path}: layer {key} joins on another axis than "
                                   "channels")
            return join
        # Detect or Segment: _structure refused the other kinds
        detect = Detect(
            [self._chain(m, f"{key}.cv2.{i}") for i, m in module.child("cv2").children()],
            [self._chain(m, f"{key}.cv3.{i}") for i, m in module.child("cv3").children()])
        return detect if kind == "Detect" else self._segment(module, key, detect)

    def _segment(self, module: PickledModule, key: str, detect: Detect) -> Segment:
        """Segment's mask branch: cv4 per level (the coefficients) and the Proto network."""
        proto = module.child("proto")
        up = proto.child("upsample")
        if up.kind != "ConvTranspose2d" or tuple(up.state.get("stride", ())) != (2, 2) or \
                tuple(up.state.get("kernel_size", ())) != (2, 2) or \
                tuple(up.state.get("padding", ())) != (0, 0):
            raise WeightsError(f"{self.path}: layer {key}.proto.upsample is not YOLOv8's 2x2 "
                               "stride-2 transposed convolution")
        weight = self._array(f"{key}.proto.upsample.weight")
        bias = self._array(f"{key}.proto.upsample.bias") \
            if (up.state.get("_parameters") or {}).get("bias") is not None \
            else np.zeros(weight.shape[1], np.float32)
        return Segment(
            detect,
            [self._chain(m, f"{key}.cv4.{i}") for i, m in module.child("cv4").children()],
            Proto(self._conv(proto.child("cv1"), f"{key}.proto.cv1"), self._tensor(weight),
                  self._tensor(bias), self._conv(proto.child("cv2"), f"{key}.proto.cv2"),
                  self._conv(proto.child("cv3"), f"{key}.proto.cv3")))

    def _network(self, layers: list[Layer]) -> YoloNetwork:
        network = [YoloLayer(self._block(module, f"model.{name}"), source)
                   for name, module, source in layers]
        name, module, _ = layers[-1]  # the head
        reg_max = int(module.state.get("reg_max", 16))
        dfl = (self._array(f"model.{name}.dfl.conv.weight").reshape(-1) if reg_max > 1
               else np.zeros(1, np.float32))
        return YoloNetwork(network, reg_max, dfl)


def load_yolo(path: str | Path, device: Device | None = None) -> YoloFile:
    """The YOLO model of `path` on `device` (default: gpucore's). WeightsError naming the file
    when it is not a YOLOv8 detection file."""
    return YoloFile(path, device)
