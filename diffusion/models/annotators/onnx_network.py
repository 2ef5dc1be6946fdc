"""A network read from an ONNX file (diffusion.loaders.formats.onnx_file), run on gpustd.

An interpreter rather than hand-written modules: DWPose's two files (YOLOX-L's detector,
RTMPose's CSPNeXt with its SimCC head) are plain graphs of about twenty operator types, so
one walk over the node list runs both, whatever names or export details (Focus as Slices,
SiLU as Sigmoid and Mul, shape arithmetic) a file has. The tensor work runs on the GPU
(onnx_ops: Conv, MaxPool, Resize, MatMul, ...); what only computes shapes (Shape, Gather,
Concat of sizes, ...) runs on the host through onnx's own reference operators, and what
depends on no input at all is computed once, when the network is built.

    network = OnnxNetwork(read_onnx("yolox_l.onnx"))
    (predictions,) = network(pixels)            # Tensors, in the graph's output order
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ...loaders.formats.onnx_file import Node, OnnxGraph
from .onnx_ops import HOST_INPUTS, SUPPORTED, UnsupportedOnnx, run_op

__all__ = ["OnnxNetwork"]

# operators whose float inputs are Tensors even when they hold one number (a bias of one
# channel)
_TENSOR_OPERANDS = {"Conv", "MatMul", "Gemm", "LayerNormalization", "Concat"}


def _fuse_silu(nodes: list[Node], keep: set[str]) -> list[Node]:
    """x * Sigmoid(x) (how torch exports SiLU) as one SiLU node, where the Sigmoid's output
    feeds nothing else."""
    uses: dict[str, int] = {}
    for node in nodes:
        for name in node.inputs:
            uses[name] = uses.get(name, 0) + 1
    sigmoids = {node.outputs[0]: node for node in nodes if node.op == "Sigmoid"}
    fused: set[str] = set()
    out = []
    for node in nodes:
        if node.op == "Mul" and len(node.inputs) == 2:
            for gate, x in (node.inputs, node.inputs[::-1]):
                source = sigmoids.get(gate)
                if (source is not None and source.inputs[0] == x and uses[gate] == 1
                        and gate not in keep):
                    fused.add(gate)
                    node = Node("SiLU", (x,), node.outputs, {}, node.name)
                    break
        out.append(node)
    return [node for node in out if not (node.op == "Sigmoid" and node.outputs[0] in fused)]


class OnnxNetwork:
    """The graph's computation on `device` (None: the default one). Calling it with the
    graph's inputs (Tensors or numpy arrays, float32) returns its outputs as Tensors.
    UnsupportedOnnx (a ValueError) in one line naming the operators it cannot run."""

    def __init__(self, graph: OnnxGraph, *, device: Device | None = None) -> None:
        self.graph = graph
        self.device = device or default_device()
        self.input_names = list(graph.input_shapes)
        self._constants: dict[str, np.ndarray] = dict(graph.weights)
        self._uploaded: dict[str, Tensor] = {}
        self._evaluators: dict[int, Any] = {}
        self._plan: list[tuple[Node, str]] = []
        host = set(graph.weights)
        missing = set()
        for node in _fuse_silu(graph.nodes, set(graph.outputs)):
            inputs = [name for name in node.inputs if name]
            if node.op == "Shape" or all(name in host for name in inputs):
                host.update(node.outputs)
                if node.op != "Shape" and all(name in self._constants for name in inputs):
                    values = self._on_host(node, [self._constants.get(n) for n in node.inputs])
                    self._constants.update(zip(node.outputs, values))
                    continue
                self._plan.append((node, "shape" if node.op == "Shape" else "host"))
            else:
                if node.op not in SUPPORTED:
                    missing.add(node.op)
                self._plan.append((node, "device"))
        if missing:
            raise UnsupportedOnnx(f"the graph uses operators this reader does not run: "
                                  f"{', '.join(sorted(missing))}")
        for node, kind in self._plan:  # the weights go to the GPU once, here
            for position, name in enumerate(node.inputs):
                value = self._constants.get(name)
                if (kind == "device" and value is not None and name not in self._uploaded
                        and self._on_device(node, position, value)):
                    self._uploaded[name] = asarray(value.astype(np.float32),
                                                   device=self.device)
        last_use: dict[str, int] = {}
        for index, (node, _) in enumerate(self._plan):
            last_use.update((name, index) for name in node.inputs if name)
        self._free_after: list[list[str]] = [[] for _ in self._plan]
        for name, index in last_use.items():
            if name not in self._constants and name not in graph.outputs:
                self._free_after[index].append(name)

    def _on_host(self, node: Node, values: list[Any]) -> list[np.ndarray]:
        """A node over host values, by onnx's reference implementation of its operator."""
        key = id(node)
        if key not in self._evaluators:
            from onnx import helper, numpy_helper
            from onnx.reference import ReferenceEvaluator

            attributes = {k: numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v
                          for k, v in node.attributes.items()}
            proto = helper.make_node(node.op, list(node.inputs), list(node.outputs),
                                     **attributes)
            self._evaluators[key] = ReferenceEvaluator(proto, opsets={"": self.graph.opset})
        feeds = {name: value for name, value in zip(node.inputs, values) if name}
        return [np.asarray(v) for v in self._evaluators[key].run(None, feeds)]

    def _on_device(self, node: Node, position: int, value: Any) -> bool:
        """Whether a numpy value is a Tensor operand of `node` (not a shape, axes or scalar)."""
        return (isinstance(value, np.ndarray) and value.dtype.kind == "f"
                and position not in HOST_INPUTS.get(node.op, ())
                and (value.size > 1 or node.op in _TENSOR_OPERANDS))

    def _device_arg(self, node: Node, position: int, name: str, value: Any) -> Any:
        if name in self._uploaded:
            return self._uploaded[name]
        if not self._on_device(node, position, value):
            return value
        return asarray(value.astype(np.float32), device=self.device)

    def __call__(self, *inputs: Any) -> list[Tensor]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"the graph takes {len(self.input_names)} input(s) "
                             f"({', '.join(self.input_names)}), got {len(inputs)}")
        values: dict[str, Any] = dict(self._constants)
        for name, x in zip(self.input_names, inputs):
            declared = self.graph.input_shapes[name]
            shape = tuple(x.shape)
            if len(shape) != len(declared) or any(
                    d is not None and d != n for d, n in zip(declared, shape)):
                raise ValueError(f"input {name}: shape {shape}, but the graph declares "
                                 f"{tuple('?' if d is None else d for d in declared)}")
            values[name] = x if isinstance(x, Tensor) else asarray(
                np.ascontiguousarray(x, np.float32), device=self.device)
        for index, (node, kind) in enumerate(self._plan):
            args = [values[name] if name else None for name in node.inputs]
            out: list[Any]
            if kind == "shape":
                sizes = np.array(values[node.inputs[0]].shape, np.int64)
                out = [sizes[node.attributes.get("start", 0):node.attributes.get("end")]]
            elif kind == "host":
                out = self._on_host(node, args)
            else:
                out = run_op(node.op, node.attributes,
                             [self._device_arg(node, i, n, v)
                              for i, (n, v) in enumerate(zip(node.inputs, args))],
                             len(node.outputs), self.graph.opset)
            values.update(zip(node.outputs, out))
            for name in self._free_after[index]:
                values.pop(name, None)
        return [values[name] for name in self.graph.outputs]
