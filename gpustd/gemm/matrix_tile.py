"""The subgroup-matrix generator's geometry (gpustd/gemm/matrix_codegen.py): a workgroup's tile
of C (`MatrixTile`: subgroups, fragments, K step, staging options) and an operand as the kernel
stages it (`Operand`: stored layout, load width, where its staged tile and fragments lie). Pure
host logic, below the code generators (gpustd/gemm/matrix_loop.py, matrix_codegen.py) and
above gpustd/gemm/matrix_loads.py (the component types).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .matrix_loads import COMPONENTS, Component

__all__ = ["MatrixTile", "Operand", "on_device"]


@dataclass(frozen=True)
class MatrixTile:
    """WM x WN subgroups of FM x FN 16x16 fragments; K steps of BK (16, 32 or 64).

    wide: 8 f16 per global load (else 4) where the contiguous dimension allows (slower on
    an H100: see gpustd/gemm/matrix_units.choose_tile). pad: f16 added to each staged
    row against bank conflicts (8 makes a 32-deep row 80 bytes, 5 16-byte units: a
    fragment's 8 rows then start in 8 different units).
    double: two staging buffers and one barrier per K step instead of one buffer and two;
    with prefetch the next step's global loads stay in registers across the multiplies and
    are staged after them, without it they are staged into the other buffer before them (no
    register held across the multiplies). With f16 accumulators the epilogue then goes
    through the staging buffers rather than a buffer of its own (`c_in_staging`).
    acc: the accumulators' type; "f16" only for comparison (the shipped kernels use f32).
    prefetch: the next K step's global loads issued before the current step's multiplies
    (False: load, stage, barrier, multiply, barrier; faster for 64x128 on an H100).
    component: "f16" or "i8" (16x16x32 fragments, "i32" accumulators, words of four:
    gpustd/gemm/matrix_loads.py); pad counts f16 either way, an i8 BK of 64 is 64 bytes.
    group: 0, or the workgroups launch in bands of `group` tile rows, column by column
    within a band (consecutive workgroups share B's columns and the band's rows of A in L2),
    rather than row by row; the same tiles, the same results.
    direct: each accumulator stored straight into C by subgroupMatrixStore where the
    caller's epilogue leaves it as it is (kernel_source's `direct`: f16 accumulators into an
    f16 C, or f32 ones into a split kernel's f32 slab; no scale, no bias, the tile filled),
    instead of through workgroup memory a fragment at a time between two barriers; the same
    bits either way.
    rolled: the staged epilogue's 8 elements a lane as a loop from the lane index, which a
    compiler cannot unroll, rather than 8 iterations it unrolls: for CPU adapters
    (`on_device`), whose compiler (llvmpipe, also under the emulated matrix units) spent
    seconds compiling the unrolled loop in every fragment's epilogue (7 of a 64 x 160 tile's
    10 s). On an H200 the loop from the lane cost 5-8% at K 320-640 and gained 2-4% at K
    3072-4096, so GPUs keep the constant loop. The same elements in the same order.
    """

    fm: int
    fn: int
    wm: int
    wn: int
    bk: int = 32
    double: bool = False
    wide: bool = False
    pad: int = 8
    acc: str = "f32"
    prefetch: bool = True
    component: str = "f16"
    group: int = 0
    direct: bool = False
    rolled: bool = False

    def __post_init__(self) -> None:
        kind = COMPONENTS.get(self.component)
        if kind is None or self.acc not in kind.accumulators or self.bk % kind.depth:
            raise ValueError(f"unsupported matrix tile: {self.component} operands into {self.acc}"
                             f" accumulators in K steps of {self.bk}")
        if self.direct and self.component != "f16":
            raise ValueError("a matrix tile stores its accumulators straight to C (direct) "
                             "only with f16 operands")

    @property
    def kind(self) -> Component:
        return COMPONENTS[self.component]

    @property
    def step(self) -> int:  # a K step in staged words (BK for f16, BK / 4 for i8)
        return self.bk // self.kind.pack

    @property
    def pad_words(self) -> int:  # the staged rows' padding in words (`pad` f16 of 2 bytes)
        return self.pad * 2 // self.kind.word_bytes

    @property
    def bm(self) -> int:
        return 16 * self.fm * self.wm

    @property
    def bn(self) -> int:
        return 16 * self.fn * self.wn

    @property
    def threads(self) -> int:
        return 32 * self.wm * self.wn

    @property
    def name(self) -> str:
        flags = "".join(f for f, on in (("/db", self.double), ("/w8", self.wide),
                                        (f"/pad{self.pad}", self.pad != 8),
                                        ("/acc16", self.acc == "f16"),
                                        ("/np", not self.prefetch),
                                        ("/i8", self.component == "i8"),
                                        (f"/g{self.group}", self.group > 0),
                                        ("/ds", self.direct),
                                        ("/rl", self.rolled)) if on)
        return f"{self.bm}x{self.bn}/{self.wm}x{self.wn}sg/{self.fm}x{self.fn}fr/k{self.bk}{flags}"

    def _staged_words(self) -> tuple[int, int]:
        """The largest staged A and B tile of one buffer (either layout, padded), in words."""
        step, pad = self.step, self.pad_words
        return (max(self.bm * (step + pad), step * (self.bm + pad)),
                max(self.bn * (step + pad), step * (self.bn + pad)))

    @property
    def c_in_staging(self) -> bool:
        """Whether the epilogue stages its fragments in sh_a (a double-buffered tile with
        f16 accumulators, whose 256 f16 a subgroup fit there: staged A is f16 too) rather
        than in an sh_c of its own: 256 x 256 in K steps of 16 then fits 48 KiB."""
        return (self.double and self.acc == "f16" and self.kind.word == "f16"
                and 2 * self.step * self.bm >= 256 * self.wm * self.wn)

    def shared_bytes(self) -> int:
        """Workgroup memory: staged tiles (either layout, padded) plus the epilogue's."""
        nbuf = 2 if self.double else 1
        a, b = self._staged_words()
        epilogue = (0 if self.c_in_staging
                    else (2 if self.acc == "f16" else 4) * 256 * self.wm * self.wn)
        return self.kind.word_bytes * nbuf * (a + b) + epilogue


def on_device(tile: MatrixTile, device: Any) -> MatrixTile:
    """`tile` as `device`'s compiler takes it best: rolled on CPU adapters (MatrixTile.rolled)."""
    return replace(tile, rolled=True) if device.info.type == "cpu" else tile


@dataclass(frozen=True)
class Operand:
    """One operand as the kernel sees it: `name` ("a" or "b"), whether its stored rows run
    along K (`k_major`: A transposed, B not), and the f16 per global load (1, 4 or 8; the
    caller's `load_{name}` returns that many from (row, col), the first of them at col)."""

    name: str
    k_major: bool
    width: int

    def staged(self, tile: MatrixTile) -> tuple[int, int]:
        """(rows, cols) of the staged K-step tile: as stored, cols contiguous."""
        extent = tile.bm if self.name == "a" else tile.bn
        return (tile.step, extent) if self.k_major else (extent, tile.step)

    def stride(self, tile: MatrixTile) -> int:
        """Words between staged rows."""
        return self.staged(tile)[1] + tile.pad_words

    def origin(self) -> tuple[str, str]:
        """WGSL expressions of the staged tile's first stored row and column."""
        mn0 = "m0" if self.name == "a" else "n0"
        return ("k0", mn0) if self.k_major else (mn0, "k0")

    def fixed_column(self, tile: MatrixTile) -> bool:
        """Whether each invocation stages the same column at every K step (then computed
        once, as `col_{name}`: the implicit GEMM's gather hoists its pixel decoding there)."""
        per_row = self.staged(tile)[1] // self.width
        return self.k_major and tile.threads % per_row == 0

    def fragment(self, tile: MatrixTile, kk: int, mn: str) -> tuple[str, bool]:
        """(offset, column-major) of the fragment at K offset kk, M/N offset mn, in elements
        (an i8 operand is staged along K only: its words pack K)."""
        stride = self.stride(tile) * tile.kind.pack
        if self.k_major and tile.kind.pack > 1:
            raise ValueError(f"{tile.name}: {tile.component} operands are staged along K only")
        at = f"{kk}u * {stride}u + {mn}" if self.k_major else f"({mn}) * {stride}u + {kk}u"
        return at, self.k_major if self.name == "a" else not self.k_major
