"""The f16 GEMM's data flow written in CUDA: what WGSL's data path reaches on this GPU outside
WGSL, and what the vector stores and asynchronous copies WGSL lacks would add (issue 25's
"evidence of the bound"; results in bench/NOTES.md).

gpustd's matrix-unit GEMM (gpustd/gemm/matrix_codegen.py) stages each K step through
registers: every invocation loads 8 bytes of A and of B from global memory, stores them into
workgroup memory one f16 at a time (WGSL cannot store a vector into the `array<f16>` that
subgroupMatrixLoad reads), waits at a barrier, loads 16x16 fragments and multiplies. This
tool writes that data flow, instruction for instruction where it matters, in CUDA C++ with
wmma (the same 16x16x16 mma.sync the Vulkan driver emits for cooperative matrices), and
beside it what WGSL cannot say. Kernels (8 warps each):

- regs_k32, regs_k16: the WGSL kernel's flow: 8-byte loads into registers one K step ahead,
          16-bit stores into shared memory (inline PTX, so that nvcc cannot merge them), two
          barriers a step; 128 x 128 tiles of warps of 4 x 2 fragments (TILES["128x128"],
          "128x128k16"), K steps of 32 or 16;
- vec_k32: the same with 16-byte loads and 16-byte shared stores;
- *_occ2: compiled for two blocks an SM (at most 128 registers a thread; nvcc gives regs_k32
          158 registers otherwise: one block an SM);
- async_k32, async_k32_s4: cp.async 16-byte copies global -> shared, 3 or 4 K steps in
          flight, one barrier a step (CUTLASS's Ampere kernels; no registers hold the operands);
- regs_256, vec_256, async_256: the same flows in 128 x 256 tiles (warps of 4 x 4 fragments:
          TILES["128x256"]).

Each is checked against torch.matmul (fp16, cuBLAS) first, then timed by CUDA events beside
cuBLAS in the same process (bench._harness.torch_cuda_ms: median of `--repeat` after warm-up
and 0.5 s of queued runs, so that both sides run at full clock). The kernels write f32 C
(wmma's store); the 4096^3 product writes 64 MB of it, ~0.02 ms at 3 TB/s. Needs nvcc, CuPy
and torch with CUDA (the benchmark machines have them); a measurement, not part of avx-gpu
(which never runs CUDA).

    python -m tools.cuda_gemm_dataflow [--shapes 4096x4096x4096,...] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile

from bench._harness import torch_cuda_ms

SOURCE = r"""
#include <mma.h>
#include <cuda_fp16.h>
using namespace nvcuda;

#define PAD 8
#define THREADS 256

template <int W> struct Vec;
template <> struct Vec<4> { typedef uint2 T; };
template <> struct Vec<8> { typedef uint4 T; };

__device__ __forceinline__ void store_half_scalar(half* p, half v) {
  unsigned addr = (unsigned)__cvta_generic_to_shared(p);
  asm volatile("st.shared.b16 [%0], %1;" :: "r"(addr), "h"(__half_as_ushort(v)));
}

// A warp's FM x FN fragments; 8 warps, WN = BN / (16 FN) of them along N.
template <int FM, int FN> using Acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>[FM][FN];

// One K step's fragments.
template <int BN, int BK, int FM, int FN>
__device__ __forceinline__ void multiply(const half* As, const half* Bs, int r_in, int c_in,
                                         Acc<FM, FN>& acc) {
  #pragma unroll
  for (int kk = 0; kk < BK; kk += 16) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> a[FM];
    wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::row_major> b[FN];
    #pragma unroll
    for (int i = 0; i < FM; i++)
      wmma::load_matrix_sync(a[i], As + (r_in + 16 * i) * (BK + PAD) + kk, BK + PAD);
    #pragma unroll
    for (int j = 0; j < FN; j++)
      wmma::load_matrix_sync(b[j], Bs + kk * (BN + PAD) + c_in + 16 * j, BN + PAD);
    #pragma unroll
    for (int i = 0; i < FM; i++)
      #pragma unroll
      for (int j = 0; j < FN; j++) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
  }
}

template <int FM, int FN>
__device__ __forceinline__ void start(Acc<FM, FN>& acc) {
  #pragma unroll
  for (int i = 0; i < FM; i++)
    #pragma unroll
    for (int j = 0; j < FN; j++) wmma::fill_fragment(acc[i][j], 0.0f);
}

template <int FM, int FN>
__device__ __forceinline__ void epilogue(float* C, int N, int m0, int n0, int r_in, int c_in,
                                         Acc<FM, FN>& acc) {
  #pragma unroll
  for (int i = 0; i < FM; i++)
    #pragma unroll
    for (int j = 0; j < FN; j++)
      wmma::store_matrix_sync(C + (size_t)(m0 + r_in + 16 * i) * N + n0 + c_in + 16 * j,
                              acc[i][j], N, wmma::mem_row_major);
}

// The WGSL kernel's flow: W halves per global load into registers one step ahead; SCALAR:
// 16-bit shared stores; load, barrier, prefetch, multiply, barrier.
template <int BM, int BN, int BK, int FM, int FN, int W, bool SCALAR>
__device__ __forceinline__ void gemm_regs(const half* __restrict__ A, const half* __restrict__ B,
                                          float* __restrict__ C, int M, int N, int K) {
  typedef typename Vec<W>::T V;
  __shared__ __align__(16) half As[BM * (BK + PAD)];
  __shared__ __align__(16) half Bs[BK * (BN + PAD)];
  const int tid = threadIdx.x, warp = tid / 32;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  constexpr int WN = BN / (16 * FN);
  const int r_in = (warp / WN) * 16 * FM, c_in = (warp % WN) * 16 * FN;
  constexpr int A_ROW = BK / W, B_ROW = BN / W;
  constexpr int A_PER = BM * A_ROW / THREADS, B_PER = BK * B_ROW / THREADS;
  V ra[A_PER], rb[B_PER];
  Acc<FM, FN> acc;
  start<FM, FN>(acc);
  const int steps = K / BK;
  auto fetch = [&](int k0) {
    #pragma unroll
    for (int q = 0; q < A_PER; q++) {
      int v = tid + q * THREADS;
      ra[q] = *(const V*)(A + (size_t)(m0 + v / A_ROW) * K + k0 + (v % A_ROW) * W);
    }
    #pragma unroll
    for (int q = 0; q < B_PER; q++) {
      int v = tid + q * THREADS;
      rb[q] = *(const V*)(B + (size_t)(k0 + v / B_ROW) * N + n0 + (v % B_ROW) * W);
    }
  };
  auto stage = [&]() {
    #pragma unroll
    for (int q = 0; q < A_PER; q++) {
      int v = tid + q * THREADS;
      half* p = As + (v / A_ROW) * (BK + PAD) + (v % A_ROW) * W;
      if (SCALAR) {
        const half* h = (const half*)&ra[q];
        #pragma unroll
        for (int e = 0; e < W; e++) store_half_scalar(p + e, h[e]);
      } else {
        *(V*)p = ra[q];
      }
    }
    #pragma unroll
    for (int q = 0; q < B_PER; q++) {
      int v = tid + q * THREADS;
      half* p = Bs + (v / B_ROW) * (BN + PAD) + (v % B_ROW) * W;
      if (SCALAR) {
        const half* h = (const half*)&rb[q];
        #pragma unroll
        for (int e = 0; e < W; e++) store_half_scalar(p + e, h[e]);
      } else {
        *(V*)p = rb[q];
      }
    }
  };
  fetch(0);
  for (int t = 0; t < steps; t++) {
    stage();
    __syncthreads();
    if (t + 1 < steps) fetch((t + 1) * BK);
    multiply<BN, BK, FM, FN>(As, Bs, r_in, c_in, acc);
    __syncthreads();
  }
  epilogue<FM, FN>(C, N, m0, n0, r_in, c_in, acc);
}

__device__ __forceinline__ void cp_async16(half* dst, const half* src) {
  unsigned addr = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(addr), "l"(src));
}

// cp.async, STAGES K steps in flight, one barrier a step (dynamic shared memory).
template <int BM, int BN, int BK, int FM, int FN, int STAGES>
__device__ __forceinline__ void gemm_async(const half* __restrict__ A, const half* __restrict__ B,
                                           float* __restrict__ C, int M, int N, int K) {
  extern __shared__ __align__(16) half smem[];
  constexpr int SA = BM * (BK + PAD), SB = BK * (BN + PAD);
  half* As = smem;
  half* Bs = smem + STAGES * SA;
  const int tid = threadIdx.x, warp = tid / 32;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  constexpr int WN = BN / (16 * FN);
  const int r_in = (warp / WN) * 16 * FM, c_in = (warp % WN) * 16 * FN;
  constexpr int A_ROW = BK / 8, B_ROW = BN / 8;
  constexpr int A_PER = BM * A_ROW / THREADS, B_PER = BK * B_ROW / THREADS;
  Acc<FM, FN> acc;
  start<FM, FN>(acc);
  const int steps = K / BK;
  auto issue = [&](int t) {
    if (t < steps) {
      int k0 = t * BK, s = t % STAGES;
      #pragma unroll
      for (int q = 0; q < A_PER; q++) {
        int v = tid + q * THREADS;
        cp_async16(As + s * SA + (v / A_ROW) * (BK + PAD) + (v % A_ROW) * 8,
                   A + (size_t)(m0 + v / A_ROW) * K + k0 + (v % A_ROW) * 8);
      }
      #pragma unroll
      for (int q = 0; q < B_PER; q++) {
        int v = tid + q * THREADS;
        cp_async16(Bs + s * SB + (v / B_ROW) * (BN + PAD) + (v % B_ROW) * 8,
                   B + (size_t)(k0 + v / B_ROW) * N + n0 + (v % B_ROW) * 8);
      }
    }
    asm volatile("cp.async.commit_group;");
  };
  #pragma unroll
  for (int s = 0; s < STAGES - 1; s++) issue(s);
  for (int t = 0; t < steps; t++) {
    asm volatile("cp.async.wait_group %0;" :: "n"(STAGES - 2));
    __syncthreads();
    issue(t + STAGES - 1);
    multiply<BN, BK, FM, FN>(As + (t % STAGES) * SA, Bs + (t % STAGES) * SB, r_in, c_in, acc);
  }
  epilogue<FM, FN>(C, N, m0, n0, r_in, c_in, acc);
}

#define ARGS const half* __restrict__ A, const half* __restrict__ B, float* __restrict__ C, \
             int M, int N, int K
// 128 x 128 tiles (warps of 4 x 2 fragments) and 128 x 256 (4 x 4: TILES["128x256"])
extern "C" __global__ void __launch_bounds__(THREADS) regs_k32(ARGS) {
  gemm_regs<128, 128, 32, 4, 2, 4, true>(A, B, C, M, N, K);
}
extern "C" __global__ void __launch_bounds__(THREADS) regs_k16(ARGS) {
  gemm_regs<128, 128, 16, 4, 2, 4, true>(A, B, C, M, N, K);
}
extern "C" __global__ void __launch_bounds__(THREADS) vec_k32(ARGS) {
  gemm_regs<128, 128, 32, 4, 2, 8, false>(A, B, C, M, N, K);
}
extern "C" __global__ void __launch_bounds__(THREADS, 2) regs_k32_occ2(ARGS) {
  gemm_regs<128, 128, 32, 4, 2, 4, true>(A, B, C, M, N, K);
}
extern "C" __global__ void __launch_bounds__(THREADS, 2) vec_k32_occ2(ARGS) {
  gemm_regs<128, 128, 32, 4, 2, 8, false>(A, B, C, M, N, K);
}
extern "C" __global__ void __launch_bounds__(THREADS) async_k32(ARGS) {
  gemm_async<128, 128, 32, 4, 2, 3>(A, B, C, M, N, K);
}
extern "C" __global__ void __launch_bounds__(THREADS) async_k32_s4(ARGS) {
  gemm_async<128, 128, 32, 4, 2, 4>(A, B, C, M, N, K);
}
extern "C" __global__ void __launch_bounds__(THREADS) regs_256(ARGS) {
  gemm_regs<128, 256, 32, 4, 4, 4, true>(A, B, C, M, N, K);
}
extern "C" __global__ void __launch_bounds__(THREADS) vec_256(ARGS) {
  gemm_regs<128, 256, 32, 4, 4, 8, false>(A, B, C, M, N, K);
}
extern "C" __global__ void __launch_bounds__(THREADS) async_256(ARGS) {
  gemm_async<128, 256, 32, 4, 4, 3>(A, B, C, M, N, K);
}
"""

# kernel name -> (description, dynamic shared bytes: 0 for static)
KERNELS = {
    "regs_k32": ("WGSL's flow: 8 B loads, 16-bit stores, 2 barriers, K 32", 0),
    "regs_k16": ("WGSL's flow, K 16 (TILES['128x128k16'])", 0),
    "vec_k32": ("16 B loads and 16 B shared stores, 2 barriers, K 32", 0),
    "regs_k32_occ2": ("WGSL's flow, K 32, at most 128 registers (2 blocks an SM)", 0),
    "vec_k32_occ2": ("16 B loads and stores, K 32, at most 128 registers", 0),
    "async_k32": ("cp.async 16 B, 3 stages, 1 barrier, K 32", 3 * (128 * 40 + 32 * 136) * 2),
    "async_k32_s4": ("cp.async 16 B, 4 stages, 1 barrier, K 32", 4 * (128 * 40 + 32 * 136) * 2),
    "regs_256": ("WGSL's flow, 128 x 256 tile (4 x 4 fragments a warp), K 32", 0),
    "vec_256": ("16 B loads and stores, 128 x 256 tile, K 32", 0),
    "async_256": ("cp.async 16 B, 3 stages, 128 x 256 tile, K 32", 3 * (128 * 40 + 32 * 264) * 2),
}
# each kernel's output tile (rows, columns)
TILE = {name: (128, 256 if name.endswith("256") else 128) for name in KERNELS}


def _module():  # type: ignore[no-untyped-def]
    """SOURCE built by nvcc for this GPU (NVRTC's pip headers lack wmma's crt/mma.h)."""
    import cupy
    import torch
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    major, minor = torch.cuda.get_device_capability()
    folder = tempfile.mkdtemp()
    source, cubin = os.path.join(folder, "dataflow.cu"), os.path.join(folder, "dataflow.cubin")
    with open(source, "w") as f:
        f.write(SOURCE)
    subprocess.run([nvcc, "-cubin", "-O3", "-std=c++17", f"-arch=sm_{major}{minor}", "-o",
                    cubin, source], check=True)
    return cupy.RawModule(path=cubin)


def run(shapes: list[tuple[int, int, int]], repeat: int) -> list[dict]:
    import cupy
    import torch
    module = _module()
    rows = []
    for m, k, n in shapes:
        if m % 128 or n % 128 or k % 32:
            raise SystemExit(f"{m}x{k}x{n}: m and n must be multiples of 128 and k of 32")
        gen = torch.Generator(device="cuda").manual_seed(0)
        a = torch.randn((m, k), device="cuda", generator=gen).half()
        b = torch.randn((k, n), device="cuda", generator=gen).half()
        out = torch.empty((m, n), device="cuda", dtype=torch.float32)
        ref = torch.matmul(a, b).float()
        flop = 2.0 * m * n * k
        ms = torch_cuda_ms(lambda a=a, b=b: torch.matmul(a, b), repeat=repeat)
        rows.append({"shape": f"{m}x{k}x{n}", "kernel": "cuBLAS (torch.matmul fp16)",
                     "ms": ms, "TFLOPs": flop / ms / 1e9, "rel_err": 0.0})
        print(rows[-1], flush=True)
        for name, (what, dynamic) in KERNELS.items():
            kernel = module.get_function(name)
            if dynamic:
                kernel.max_dynamic_shared_size_bytes = dynamic
            if n % TILE[name][1]:
                continue
            grid, block = (n // TILE[name][1], m // TILE[name][0]), (256,)
            args = (cupy.from_dlpack(a), cupy.from_dlpack(b), cupy.from_dlpack(out),
                    cupy.int32(m), cupy.int32(n), cupy.int32(k))

            def call(kernel=kernel, grid=grid, block=block, args=args,
                     dynamic=dynamic) -> None:
                kernel(grid, block, args, shared_mem=dynamic)
            out.zero_()
            call()
            torch.cuda.synchronize()
            err = ((out - ref).abs().max() / ref.abs().max()).item()
            ms = torch_cuda_ms(call, repeat=repeat)
            rows.append({"shape": f"{m}x{k}x{n}", "kernel": name, "what": what, "ms": ms,
                         "TFLOPs": flop / ms / 1e9, "rel_err": err})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="4096x4096x4096,2048x5120x1280,8192x2560x640",
                        help="m x k x n products, comma-separated (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per kernel")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    rows = run(shapes, args.repeat)  # type: ignore[arg-type]
    print(f"\n{'shape':>16} {'kernel':>28} {'ms':>8} {'TFLOP/s':>8} {'rel err':>9}")
    for r in rows:
        print(f"{r['shape']:>16} {r['kernel'][:28]:>28} {r['ms']:8.3f} {r['TFLOPs']:8.1f} "
              f"{r['rel_err']:9.1e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tool": "cuda_gemm_dataflow", "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
