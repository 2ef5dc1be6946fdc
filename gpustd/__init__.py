"""gpustd: numpy-like arrays and operations built from WGSL shaders on gpucore.

Top level: Tensor, array creation, elementwise math, reductions, shape functions, BLAS-1
and matmul, convolve/correlate — numpy's names and semantics. Submodules: `linalg`, `fft`,
`signal`, `image`, `nn` (the neural-network operators and layers), `quant` (GGML block formats
kept on the GPU and dequantized there), and `gpustd.dask` (Tensor as a Dask array chunk type:
gpustd across the GPUs of a cluster; imported on its own); `gemm` holds the GEMM kernels behind
linalg and nn (plans, kernels, their tuners: see its docstring).
"""

import gpucore

# _numpy_api fills Tensor's operator and numpy-protocol tables
from . import _numpy_api, fft, image, linalg, nn, quant, signal  # noqa: F401
from ._tensor import Tensor, asarray, empty, zeros
from .bitwise import (
    bitwise_and,
    bitwise_not,
    bitwise_or,
    bitwise_xor,
    invert,
    left_shift,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    right_shift,
)
from .capture import capture
from .elementwise import (
    add,
    divide,
    divmod,
    equal,
    floor_divide,
    greater,
    greater_equal,
    less,
    less_equal,
    maximum,
    minimum,
    mod,
    multiply,
    not_equal,
    power,
    remainder,
    subtract,
    where,
)
from .gather import take
from .gemm.matrix_units import available as has_matrix_units
from .kernel_compiler import KernelCompileError, elementwise_kernel, reduction_kernel
from .linalg import dot, matmul
from .reduction import argmax, argmin, logsumexp, max, mean, min, std, sum, var
from .scan import cumsum, flatnonzero
from .shape import (
    concatenate,
    matrix_transpose,
    permute,
    split,
    swapaxes,
    take_slice,
    transpose,
)
from .signal import convolve, correlate
from .softmax import log_softmax, softmax
from .unary import abs, clip, exp, gelu, log, negative, rsqrt, sigmoid, silu, sqrt, tanh

# every op's WGSL lives in the `shaders` package, by area: Kernel.load("linalg/gemm")
gpucore.register_shader_root("shaders")

__all__ = [
    "KernelCompileError", "Tensor", "abs", "add", "argmax", "argmin", "asarray", "bitwise_and",
    "bitwise_not", "bitwise_or", "bitwise_xor", "capture", "clip", "concatenate", "convolve",
    "correlate", "cumsum", "divide", "divmod", "dot", "elementwise_kernel", "empty", "equal",
    "exp", "fft", "flatnonzero", "floor_divide", "gelu", "greater", "greater_equal",
    "has_matrix_units", "image", "invert", "left_shift", "less", "less_equal", "linalg", "log",
    "log_softmax", "logical_and", "logical_not", "logical_or", "logical_xor", "logsumexp",
    "matmul", "matrix_transpose", "max", "maximum", "mean", "min", "minimum", "mod", "multiply",
    "negative", "nn", "not_equal", "permute", "power", "quant", "reduction_kernel", "remainder",
    "right_shift", "rsqrt", "sigmoid", "signal", "silu", "softmax", "split", "sqrt", "std",
    "subtract", "sum", "swapaxes", "take", "take_slice", "tanh", "transpose", "var", "where",
    "zeros",
]
