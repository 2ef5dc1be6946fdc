"""The GEMM kernels behind gpustd.linalg (gemm, matmul), QR and gpustd.nn (linear, 1x1 convs),
one import direction, bottom to top:

- plan.py: pure host logic -- gemm.wgsl's tiles, plan_gemm's rule (tile, K splits, main
  loop), the split-K partition, the batch plan; MULTIPROCESSORS, the one count the rules use;
- portable.py: shaders/linalg/gemm.wgsl specialized (gemm_kernel), dispatched (dispatch) and
  recorded in the configuration it is given (record_gemm); cpu.py: shaders/linalg/gemm_cpu.wgsl,
  the direct GEMM of CPU adapters, and what gpustd/nn's direct attention and conv2d share with
  it (LANES, direct_kernel);
- matrix_loads.py: what the generator knows of a component type (f16, i8) and its global
  loads; matrix_tile.py: a tile's geometry (MatrixTile, Operand); matrix_loop.py: the staging
  and the K loop; matrix_codegen.py: the generator of the subgroup-matrix kernels (the whole
  kernel and its epilogue), shared with gpustd/nn's conv2d and attention; matrix_units.py:
  the f16 GEMM built with it; int8_units.py: the W8A8 GEMM (i8 tiles, or
  shaders/quant/gemm_w8a8.wgsl without them);
- tuning.py, matrix_tuning.py: the autotuner's ops "gemm" and "gemm_sm" above the kernels
  they tune (they import the kernels; the kernels never import them);
- dispatch.py: record_gemm for the callers -- which kernel, in the tuner's configuration.

Nothing is imported here: `from gpustd.gemm import plan` loads plan alone.
"""
