"""ONNX model files (.onnx) read with the `onnx` package (extra: dwpose): the graph's nodes in
order, its weights (initializers and Constant nodes) as numpy arrays, and its inputs' and
outputs' names and declared shapes. Nothing in the file runs; the protobuf is only parsed.

    graph = read_onnx("annotators/openpose/yolox_l.onnx")
    graph.nodes[0]           # Node(op="Conv", inputs=("images", "w0", "b0"), outputs=..., ...)
    graph.weights["w0"]      # numpy array
    graph.input_shapes       # {"images": (1, 3, 640, 640)} (None where a dimension is named)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import WeightsError

__all__ = ["Node", "OnnxGraph", "read_onnx"]


@dataclass(frozen=True)
class Node:
    """One operator: its ONNX type, its input and output value names ("" for an optional
    input left out) and its attributes as Python values (ints, floats, strings, lists,
    numpy arrays for tensors)."""

    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, Any] = field(default_factory=dict)
    name: str = ""


@dataclass(frozen=True)
class OnnxGraph:
    """A model file's main graph: nodes in execution order, weights by name, the names of
    its real inputs (the ones that are not weights) with their declared shapes, and its
    outputs' names."""

    nodes: list[Node]
    weights: dict[str, np.ndarray]
    input_shapes: dict[str, tuple[int | None, ...]]
    outputs: list[str]
    opset: int

    def op_types(self) -> set[str]:
        """The operator types the graph uses."""
        return {node.op for node in self.nodes}


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise WeightsError("reading .onnx files needs the onnx package: pip install "
                           "'avx-gpu[dwpose]' (or pip install onnx)") from None
    return onnx


def _attribute(onnx: Any, attribute: Any) -> Any:
    from onnx import numpy_helper

    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


def read_onnx(path: str | os.PathLike[str]) -> OnnxGraph:
    """The graph of the .onnx file at `path`. WeightsError in one line when the file is not
    an ONNX model, keeps its weights in another file, or holds subgraphs (If, Loop)."""
    onnx = _onnx()
    from onnx import numpy_helper

    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
        raise WeightsError(f"{path}: not an ONNX model file ({type(exc).__name__}); give the "
                           ".onnx file as downloaded") from None
    graph = model.graph
    weights: dict[str, np.ndarray] = {}
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise WeightsError(f"{path}: its weights are in a separate file; give a model "
                               "saved with its weights inside")
        weights[tensor.name] = numpy_helper.to_array(tensor)
    nodes = []
    for proto in graph.node:
        attributes = {a.name: _attribute(onnx, a) for a in proto.attribute}
        if proto.op_type in ("If", "Loop", "Scan"):
            raise WeightsError(f"{path}: its graph branches or loops ({proto.op_type}), which "
                               "this reader does not run; export the model without them")
        if proto.op_type == "Constant" and "value" in attributes:
            weights[proto.output[0]] = attributes["value"]
            continue
        nodes.append(Node(proto.op_type, tuple(proto.input), tuple(proto.output), attributes,
                          proto.name))
    input_shapes = {
        value.name: tuple(d.dim_value if d.HasField("dim_value") else None
                          for d in value.type.tensor_type.shape.dim)
        for value in graph.input if value.name not in weights}
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                default=1)
    return OnnxGraph(nodes, weights, input_shapes, [value.name for value in graph.output],
                     opset)
