"""Python functions compiled to WGSL kernels: `elementwise_kernel` and `reduction_kernel`.

The language is a pure expression subset of Python over scalars (see `elementwise_kernel`).
Types are inferred per expression, numpy style:

- A Tensor argument has its dtype (float32 -> f32, float16 -> f16, int32, uint32); a numpy
  array is uploaded first (float64 -> float32, int64 -> int32, bool -> uint32).
- Python numbers (arguments, literals, global constants) are *weak* (numpy's NEP 50): they
  take the other operand's type, defaulting to int32 / float32. numpy scalars such as
  `np.float32(2)` keep their type; 64-bit ones act as Python numbers.
- Two types meet as in numpy, with its 64-bit results narrowed: int32 with uint32 -> int32,
  an integer with a float -> float32, float16 with float32 -> float32.
- `/` of integers is float32; `//` and `%` round toward -inf (x // 0 == x % 0 == 0 for
  integers); `**` follows `np.power` (a negative integer exponent gives 0 unless |x| == 1).
- Comparisons, `and`, `or`, `not`, isnan, ... are bool; a bool result is stored as uint32
  0/1; bools in arithmetic count as int32 (Python's rule). `and`/`or` give bools, not an
  operand, and both sides of `a if c else b` are evaluated.
- Float math runs in f32 (float16 arguments are widened and the result rounded back);
  floor/ceil/trunc/round/abs/min/max keep integer types, as numpy's ufuncs do.
- Integer arithmetic wraps at 32 bits, float-to-int conversion saturates; NaN handling of
  min/max is the GPU's.
"""

from ._elementwise import ElementwiseKernel, elementwise_kernel
from ._reduction import ReductionKernel, reduction_kernel
from ._source import KernelCompileError

__all__ = ["ElementwiseKernel", "KernelCompileError", "ReductionKernel", "elementwise_kernel",
           "reduction_kernel"]
