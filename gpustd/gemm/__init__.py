"""The GEMM corner: plans, the portable kernel (shaders/linalg/gemm.wgsl), the matrix-unit
kernels generated for subgroup matrices, and the autotuner that picks among their tiles."""
