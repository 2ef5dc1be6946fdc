"""gpustd: numpy-like arrays and operations built from WGSL shaders on gpucore."""

from ._tensor import Tensor, asarray, empty, zeros

__all__ = ["Tensor", "asarray", "empty", "zeros"]
