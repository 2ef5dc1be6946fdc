"""The generator behind the subgroup-matrix kernels (WGSL `chromium_experimental_subgroup_matrix`,
Dawn): f16 operands staged in workgroup memory, 16x16x16 fragments multiplied on the matrix
units, f32 (or, for comparison, f16) accumulation. gpustd/gemm/matrix_units.py (GEMM)
and gpustd/nn/_conv_subgroup_matrix.py (implicit-GEMM conv2d) build their kernels here.

The WGSL is generated, not read from shaders/: a subgroup's FM x FN accumulators and its
fragments must be named variables (an array of matrices indexed in a loop goes to local
memory), so the code is unrolled per tile shape. naga cannot parse the extension, which is
one more reason it stays out of shaders/ (every file there compiles on every adapter).

A workgroup of WM x WN subgroups computes a (16 FM WM) x (16 FN WN) tile of C. Per K step
of BK, the operands' tiles are staged in workgroup memory (zero-filled outside the matrix,
so ragged M, N, K need no special case; 4 or 8 f16 per global load where the contiguous
dimension allows), the next step's global loads in flight while the current one multiplies
(`MatrixTile.prefetch`; without it each step loads, stages and multiplies in turn).
An `aligned` kernel (M, N, K whole multiples of the tile and of BK) checks no bound (H100: the
64x128 GEMM at 4096^3 nt/nn 90.5/104.4 TFLOP/s against the checked kernel's 62.9/67.6).
An operand stored K-major on the "wrong" side (A transposed, B not transposed is row-major
K x N) is staged as stored and its fragments loaded column-major where needed. The caller
supplies each operand's global load (`load_a(row, col)`, `load_b(row, col)` in the stored
matrix's coordinates, zero outside it), its bindings and `store_c(row, col, value)`; the
epilogue goes through workgroup memory a fragment at a time and calls store_c per element.
"""

from __future__ import annotations

from dataclasses import dataclass

from .matrix_loads import (
    COMPONENTS,
    HALF8,
    Component,
    contiguous_load,
    fragment_stride,
    load_type,
    load_width,
)

__all__ = ["MatrixTile", "Operand", "contiguous_load", "kernel_source", "load_type", "load_width"]

_PARTS = {1: ("",), 4: (".x", ".y", ".z", ".w"),
          8: (".lo.x", ".lo.y", ".lo.z", ".lo.w", ".hi.x", ".hi.y", ".hi.z", ".hi.w")}


@dataclass(frozen=True)
class MatrixTile:
    """WM x WN subgroups of FM x FN 16x16 fragments; K steps of BK (16, 32 or 64).

    wide: 8 f16 per global load (else 4) where the contiguous dimension allows (slower on
    an H100: see gpustd/gemm/matrix_units.choose_tile). pad: f16 added to each staged
    row against bank conflicts (8 makes a 32-deep row 80 bytes, 5 16-byte units: a
    fragment's 8 rows then start in 8 different units).
    double: two staging buffers and one barrier per K step instead of one buffer and two.
    acc: the accumulators' type; "f16" only for comparison (the shipped kernels use f32).
    prefetch: the next K step's global loads issued before the current step's multiplies
    (False: load, stage, barrier, multiply, barrier; faster for 64x128 on an H100).
    component: "f16" or "i8" (16x16x32 fragments, "i32" accumulators, words of four:
    gpustd/gemm/matrix_loads.py); pad counts f16 either way, an i8 BK of 64 is 64 bytes.
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

    def __post_init__(self) -> None:
        kind = COMPONENTS.get(self.component)
        if kind is None or self.acc not in kind.accumulators or self.bk % kind.depth:
            raise ValueError(f"unsupported matrix tile: {self.component} operands into {self.acc}"
                             f" accumulators in K steps of {self.bk}")

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
                                        ("/i8", self.component == "i8")) if on)
        return f"{self.bm}x{self.bn}/{self.wm}x{self.wn}sg/{self.fm}x{self.fn}fr/k{self.bk}{flags}"

    def shared_bytes(self) -> int:
        """Workgroup memory: staged tiles (either layout, padded) plus the epilogue's."""
        nbuf = 2 if self.double else 1
        step, pad = self.step, self.pad_words
        a = max(self.bm * (step + pad), step * (self.bm + pad))
        b = max(self.bn * (step + pad), step * (self.bn + pad))
        return (self.kind.word_bytes * nbuf * (a + b)
                + (2 if self.acc == "f16" else 4) * 256 * self.wm * self.wn)


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


def _stage_code(op: Operand, tile: MatrixTile) -> tuple[list[str], list[str], list[str]]:
    """(private declarations, fetch statements, store statements) of one operand's staging:
    fetch reads global memory into registers, store writes them to workgroup memory."""
    rows, cols = op.staged(tile)
    per_row = cols // op.width
    count = rows * per_row
    if count % tile.threads:
        raise ValueError(f"{op.name} tile {rows}x{cols} does not split over {tile.threads}")
    row0, col0 = op.origin()
    fixed = op.fixed_column(tile)
    decls, fetch, store = [], [], []
    for q in range(count // tile.threads):
        reg = f"r{op.name}{q}"
        decls.append(f"var<private> {reg}: {load_type(op.width, tile.component)};")
        v = f"(tid + {q * tile.threads}u)"
        col = f"col_{op.name}" if fixed else f"{col0} + {v} % {per_row}u * {op.width}u"
        fetch.append(f"  {reg} = load_{op.name}({row0} + {v} / {per_row}u, {col});")
        at = f"at_{op.name} + {v} / {per_row}u * {op.stride(tile)}u + " \
             f"{v} % {per_row}u * {op.width}u"
        parts = [f"sh_{op.name}[s + {e}u] = {reg}{p};" for e, p in enumerate(_PARTS[op.width])]
        store.append(f"  {{ let s = {at}; {' '.join(parts)} }}")
    return decls, fetch, store


def _multiply_code(tile: MatrixTile, a: Operand, b: Operand) -> str:
    """The unrolled fragment loads and multiply-accumulates of one staged K step: a block per
    16-deep K slice, so that its fragments are block-local."""
    name, depth, pack = tile.component, tile.kind.depth, tile.kind.pack
    left = f"subgroup_matrix_left<{name}, {depth}, 16>"
    right = f"subgroup_matrix_right<{name}, 16, {depth}>"
    cur_a, cur_b = ("cur_a", "cur_b") if pack == 1 else (f"cur_a * {pack}u", f"cur_b * {pack}u")
    blocks = []
    for kk in range(0, tile.bk, depth):
        body = []
        for i in range(tile.fm):
            at, col_major = a.fragment(tile, kk, f"r_in + {16 * i}u")
            body.append(f"let a{i} = subgroupMatrixLoad<{left}>(&sh_a, {cur_a} + {at}, "
                        f"{str(col_major).lower()}, {fragment_stride(a.stride(tile), name)}u);")
        for j in range(tile.fn):
            at, col_major = b.fragment(tile, kk, f"c_in + {16 * j}u")
            body.append(f"let b{j} = subgroupMatrixLoad<{right}>(&sh_b, {cur_b} + {at}, "
                        f"{str(col_major).lower()}, {fragment_stride(b.stride(tile), name)}u);")
        body += [f"c_{i}_{j} = subgroupMatrixMultiplyAccumulate(a{i}, b{j}, c_{i}_{j});"
                 for i in range(tile.fm) for j in range(tile.fn)]
        blocks.append("    {\n" + "\n".join("      " + x for x in body) + "\n    }")
    return "\n".join(blocks)


def _main_loop(tile: MatrixTile, size_a: int, size_b: int, body: str, first: str = "",
               fetch: str = "fetch") -> str:
    """The K loop: stage, multiply, fetch the next step in between; `first` ("k_first + " in a
    split-K kernel) offsets every step's K; `fetch` names the step's global loads."""
    bk = tile.step
    if tile.double:
        return f"""  stage(0u, 0u);
  workgroupBarrier();
  for (var t = 0u; t < steps; t++) {{
    let cur_a = (t & 1u) * {size_a}u;
    let cur_b = (t & 1u) * {size_b}u;
    k0 = {first}(t + 1u) * {bk}u;
    if (t + 1u < steps) {{ {fetch}(); }}
{body}
    if (t + 1u < steps) {{ stage({size_a}u - cur_a, {size_b}u - cur_b); }}
    workgroupBarrier();
  }}"""
    if not tile.prefetch:
        return f"""  for (var t = 0u; t < steps; t++) {{
    let cur_a = 0u;
    let cur_b = 0u;
    k0 = {first}t * {bk}u;
    {fetch}();
    stage(0u, 0u);
    workgroupBarrier();
{body}
    workgroupBarrier();
  }}"""
    return f"""  for (var t = 0u; t < steps; t++) {{
    stage(0u, 0u);
    workgroupBarrier();
    let cur_a = 0u;
    let cur_b = 0u;
    k0 = {first}(t + 1u) * {bk}u;
    if (t + 1u < steps) {{ {fetch}(); }}
{body}
    workgroupBarrier();
  }}"""


def kernel_source(tile: MatrixTile, a: Operand, b: Operand, *, declarations: str, setup: str,
                  extent: tuple[str, str, str], comment: str, aligned: bool = False,
                  split: str = "", parts: int = 1, pairs: bool = False) -> str:
    """A whole subgroup-matrix kernel: C (M x N) = A (M x K) B (K x N), tile by tile.

    declarations: the caller's bindings, `Params`, `load_a`, `load_b` and
    `store_c(row: u32, col: u32, value: f32)` (called for each C element inside M x N).
    setup: statements run per invocation before the first load (they may read `wid`,
    `m0`, `n0`, `tid`, the fixed columns `col_a`/`col_b` and set the caller's private
    variables). extent: WGSL expressions of
    M, N and K. aligned: the caller promises M, N, K are multiples of the tile's BM, BN, BK
    (its loads may then skip their bound checks); the epilogue skips its own.
    split: split K (a WGSL expression of the K steps per split, e.g. "params.split_steps"):
    workgroup z walks steps [z split, (z + 1) split) of K only (the last split the rest), its
    id in store_c as `split_id`; the caller sums the splits' partial results.
    parts: one A against `parts` Bs, each product into a C of its own, workgroup z choosing
    the pair: the caller declares `load_b_{i}` and `store_c_{i}` for each part i rather than
    load_b and store_c, and each part gets its own copy of the K loop and the epilogue behind
    one branch on wid.z (a uniform branch), so that no load or store chooses its buffer
    (a choice per load ran 1.9x slower on an H100: bench/NOTES.md, "q, k and v in one
    dispatch").
    pairs: C's columns come in halves per tile, the left half of each tile's BN columns
    pairing with the right (GEGLU's value and gate columns: the caller's load_b maps them);
    the caller declares `store_pair(row, col, left, right)` rather than store_c, called for
    row < M and col < N / 2, col counting the tile's left halves only (wid.x * BN / 2 + the
    column within the half). Needs an even WN: the left half's subgroups read their
    partners' (WN / 2 further) accumulators from workgroup memory."""
    m_total, n_total, k_total = extent
    if pairs and (tile.wn % 2 or parts > 1 or split):
        raise ValueError(f"pairs need an even WN, no parts and no split (tile {tile.name})")
    a_decl, a_fetch, a_store = _stage_code(a, tile)
    b_decl, b_fetch, b_store = _stage_code(b, tile)
    nbuf = 2 if tile.double else 1
    size_a = a.staged(tile)[0] * a.stride(tile)
    size_b = b.staged(tile)[0] * b.stride(tile)
    acc = tile.acc
    accumulators = [f"  var c_{i}_{j}: subgroup_matrix_result<{acc}, 16, 16>;"
                    for i in range(tile.fm) for j in range(tile.fn)]
    columns = [f"  col_{op.name} = {op.origin()[1]} + tid % {op.staged(tile)[1] // op.width}u"
               f" * {op.width}u;" for op in (a, b) if op.fixed_column(tile)]
    inside = "" if aligned else f"if (row < {m_total} && col < {n_total}) "
    nl = "\n"
    suffixes = [f"_{p}" for p in range(parts)] if parts > 1 else [""]
    fetches = [f"""fn fetch{x}() {{
{nl.join(a_fetch + [f.replace("load_b(", f"load_b{x}(") for f in b_fetch])}
}}""" for x in suffixes]
    puts = [f"""// 8 elements of one 16 x 16 fragment per lane, to store_c{x} where inside M x N.
fn put_fragment{x}(row0: u32, col0: u32, at: u32, lane: u32) {{
  for (var e = 0u; e < 8u; e++) {{
    let i = lane + 32u * e;
    let row = row0 + i / 16u;
    let col = col0 + i % 16u;
    {inside}{{ store_c{x}(row, col, f32(sh_c[at + i])); }}
  }}
}}""" for x in suffixes]
    if pairs:
        check = "" if aligned else f"if (row < {m_total} && col < {n_total} / 2u) "
        puts = [f"""// 8 elements of one 16 x 16 fragment and its partner's per lane, to store_pair.
fn put_pair(row0: u32, col0: u32, at: u32, lane: u32) {{
  for (var e = 0u; e < 8u; e++) {{
    let i = lane + 32u * e;
    let row = row0 + i / 16u;
    let col = col0 + i % 16u;
    {check}{{ store_pair(row, col, f32(sh_c[at + i]), f32(sh_c[at + {128 * tile.wn}u + i])); }}
  }}
}}"""]
    multiply = _multiply_code(tile, a, b)

    def walk(x: str) -> str:
        """The K loop and the epilogue of the part that `x` suffixes."""
        put = [f"put_fragment{x}(m0 + r_in + {16 * i}u, n0 + c_in + {16 * j}u, sg * 256u, lane);"
               for i in range(tile.fm) for j in range(tile.fn)]
        if pairs:  # the left half's subgroups (sg % WN < WN / 2) store both halves
            put = [f"if (sg % {tile.wn}u < {tile.wn // 2}u) {{ put_pair(m0 + r_in + {16 * i}u, "
                   f"wid.x * {tile.bn // 2}u + c_in + {16 * j}u, sg * 256u, lane); }}"
                   for i in range(tile.fm) for j in range(tile.fn)]
        epilogue = [f"  subgroupMatrixStore(&sh_c, sg * 256u, c_{i}_{j}, false, 16u);\n"
                    f"  workgroupBarrier();\n  {put[i * tile.fn + j]}\n"
                    f"  workgroupBarrier();"
                    for i in range(tile.fm) for j in range(tile.fn)]
        return f"""{f"  fetch{x}();" if tile.prefetch or tile.double else ""}
{_main_loop(tile, size_a, size_b, multiply, "k_first + " if split else "", f"fetch{x}")}
{nl.join(epilogue)}"""

    if parts > 1:
        body = " else ".join(f"if (wid.z == {p}u) {{\n{walk(x)}\n}}"
                             for p, x in enumerate(suffixes))
    else:
        body = walk("")
    return f"""enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
// Generated by gpustd/gemm/matrix_codegen.py ({comment}): tile {tile.name}.
{HALF8}
{declarations}

var<workgroup> sh_a: array<{tile.kind.word}, {size_a * nbuf}>;
var<workgroup> sh_b: array<{tile.kind.word}, {size_b * nbuf}>;
var<workgroup> sh_c: array<{acc}, {256 * tile.wm * tile.wn}>;
{nl.join(a_decl + b_decl)}
var<private> tid: u32;
var<private> m0: u32;
var<private> n0: u32;
var<private> k0: u32;
var<private> col_a: u32;
var<private> col_b: u32;
{"var<private> split_id: u32;" if split else ""}

{nl.join(fetches)}

fn stage(at_a: u32, at_b: u32) {{
{nl.join(a_store + b_store)}
}}

{nl.join(puts)}

@compute @workgroup_size({tile.threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) local_index: u32,
        @builtin(subgroup_id) sg: u32,
        @builtin(subgroup_invocation_id) lane: u32) {{
  tid = local_index;
  m0 = wid.y * {tile.bm}u;
  n0 = wid.x * {tile.bn}u;
{nl.join(columns)}
{setup}
  let r_in = (sg / {tile.wn}u) * {16 * tile.fm}u;
  let c_in = (sg % {tile.wn}u) * {16 * tile.fn}u;
{nl.join(accumulators)}
{_k_range(tile, k_total, split)}
{body}
}}
"""


def _k_range(tile: MatrixTile, k_total: str, split: str) -> str:
    """The K steps this workgroup walks (`steps`) and its first K (`k0`): all of K, or with a
    split, workgroup z's slice (splits start on BK boundaries, so a split's last step never
    reads the next split's K; only the last split's last step reaches past K, zero-filled).
    `steps` comes from wid.z, not the private split_id: the loop's barriers need a uniform
    trip count, and Tint takes module-scope private variables as non-uniform."""
    all_steps = f"({k_total} + {tile.step - 1}u) / {tile.step}u"
    if not split:
        return f"  let steps = {all_steps};\n  k0 = 0u;"
    return f"""  split_id = wid.z;
  let k_steps_all = {all_steps};
  let steps = min({split}, k_steps_all - min(k_steps_all, wid.z * {split}));
  let k_first = wid.z * {split} * {tile.step}u;
  k0 = k_first;"""
