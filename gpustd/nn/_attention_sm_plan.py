"""The pieces of the matrix-unit flash attention's WGSL (gpustd/nn/_attention_subgroup_matrix.py):
its tile plan (`SMPlan`), the staging of q/k/v rows into workgroup memory (all at once, or
split into global loads and stores for prefetching), the online softmax of one row fragment
with the scores held in registers, and the moves of the output fragments through the
scores' scratch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RESULT", "SMPlan", "fetch_rows", "key_bias", "lean_softmax", "masked_softmax",
           "raise_max", "row_shuffles", "softmax_in_registers", "stage_q_passes", "stage_rows",
           "through_scratch"]

RESULT = "subgroup_matrix_result<f32, 16, 16>"
_PAD_F16 = 8  # elements that end each staged f16 row / f32 row (16 bytes)
_PAD_F32 = 4

@dataclass(frozen=True)
class SMPlan:
    """SG subgroups of FQ 16-row query fragments; key tiles of FK 16-key fragments; head dim
    D (padded to DP). Strides: every staged row ends with pad elements so that rows stay
    16-byte aligned (what the matrix loads want) while banks rotate.
    prefetch: the next K/V tile's global loads are issued into registers before this tile's
    products and stored into workgroup memory at the next tile's start (their latency hides
    behind the matrix work instead of stalling every subgroup at the barrier).
    rotate: the softmax lanes of rows 8-15 walk their columns two ahead of rows 0-7, so the
    32 lanes' f32 reads of S and f16 writes of P fall in 32 different banks (without it rows
    r and r + 8 share banks: two-way conflicts on every access).
    regs: each lane reads its scores once into registers (unrolled) for both the row max
    and P, instead of two loops over workgroup memory.
    lean (with regs): the row max and the row sum as trees instead of chains, the scale
    folded into exp2's argument by an fma, and full key tiles free of the bounds selects.
    runs (with regs): a softmax lane takes a run of adjacent score columns instead of every
    second (or fourth) one, so its reads of S and writes of P are neighbours the compiler
    may merge into wide accesses.
    split: SPLIT subgroups share each 16 FQ query rows (a row group; BQ = 16 FQ SG / SPLIT)
    and divide the work on them: each computes S for FK / SPLIT of the key fragments and
    keeps O for DP / SPLIT of the head dim, so at D 128 a subgroup holds half the output
    fragments; 2 SPLIT lanes share a row of the softmax, and the rows' rescale factors
    reach the other subgroups through workgroup memory. Where BQ rows of q do not fit the
    K/V staging area, q is staged in passes of head-dim columns.
    headroom: how far (log2) a tile's scores may pass the running row max before it is
    raised (and O rescaled, through workgroup memory, on every subgroup): P <= 2^headroom,
    exact in f16 up to 15; rows whose later keys score higher rescale less often.
    mask: a key mask broadcast over the query rows (0 none, 1 an additive f32 bias, 2 a
    u32 keep-mask): each key tile's bias, scaled by log2 e (-inf for dropped keys and
    keys past Lk), is read once into workgroup memory and added to the scaled scores."""

    d: int
    fq: int = 2
    fk: int = 2
    sg: int = 4
    prefetch: bool = False
    rotate: bool = False
    regs: bool = False
    lean: bool = False
    split: int = 1
    runs: bool = False
    headroom: int = 8
    mask: int = 0

    def __post_init__(self) -> None:
        if self.mask not in (0, 1, 2) or (self.mask and self.threads < self.bk):
            raise ValueError(f"attention plan {self.name}: mask must be 0, 1 or 2, and a "
                             "masked plan needs an invocation per key of a tile")
        if not 1 <= self.headroom <= 15:  # P up to 2^headroom must stay under f16's 65504
            raise ValueError(f"attention plan {self.name}: headroom must be 1 to 15")
        if self.runs and (self.rotate or not self.regs):
            raise ValueError(f"attention plan {self.name}: runs needs regs without rotate")
        if self.split > 1 and (self.fk % self.split or (self.dp // 16) % self.split
                               or self.sg % self.split or self.rotate or not self.regs):
            raise ValueError(f"attention plan {self.name}: split {self.split} must divide FK, "
                             "SG and DP / 16, and needs regs without rotate")

    @property
    def name(self) -> str:
        """e.g. "1x2x8pr": fq x fk x sg, p = prefetch, r = rotate, s = regs, l = lean,
        u = runs, "-c2" = split 2, "-h15" = headroom 15 (8 unnamed), "-m1" / "-m2" = mask."""
        return (f"{self.fq}x{self.fk}x{self.sg}" + ("p" if self.prefetch else "")
                + ("r" if self.rotate else "") + ("s" if self.regs else "")
                + ("l" if self.lean else "") + ("u" if self.runs else "")
                + (f"-c{self.split}" if self.split > 1 else "")
                + (f"-h{self.headroom}" if self.headroom != 8 else "")
                + (f"-m{self.mask}" if self.mask else ""))

    @property
    def dp(self) -> int:
        return 16 * math.ceil(self.d / 16)

    @property
    def bq(self) -> int:
        return 16 * self.fq * self.sg // self.split

    @property
    def lanes_per_row(self) -> int:
        """Lanes that share one query row of the softmax."""
        return 2 * self.split

    @property
    def q_width(self) -> int:
        """Head-dim columns of q staged a pass: DP where BQ rows fit the K/V area at once."""
        if self.split == 1 or self.bq <= 2 * self.bk:
            return self.dp
        return max(16, 16 * ((2 * self.bk * self.strides[0] // self.bq - _PAD_F16) // 16))

    @property
    def bk(self) -> int:
        return 16 * self.fk

    @property
    def threads(self) -> int:
        return 32 * self.sg

    @property
    def strides(self) -> tuple[int, int, int]:
        """(staged q/k/v row, S row (f32), P row) strides in elements."""
        return self.dp + _PAD_F16, self.bk + _PAD_F32, self.bk + _PAD_F16

    def kv_elements(self) -> int:
        if self.q_width < self.dp:  # q in column passes
            return max(2 * self.bk * self.strides[0], self.bq * (self.q_width + _PAD_F16))
        return max(self.bq, 2 * self.bk) * self.strides[0]  # q first, then k and v

    def shared_bytes(self) -> int:
        _, ss, ps = self.strides
        rows = self.bq
        alpha = 4 * rows if self.split > 1 else 0
        bias = 4 * self.bk if self.mask else 0
        return (2 * self.kv_elements() + 4 * rows * ss + 2 * rows * ps + 4 * rows + alpha
                + bias + 16)


def stage_rows(plan: SMPlan, src: str, dst: str, rows: int, row0: str, length: str,
           base: str, stride: str) -> str:
    """Copy `rows` rows of `src` (row r at base + (row0 + r) * stride) into sh_kv at `dst`,
    zero past `length` rows and past D columns; vec4 reads when D allows them."""
    st = plan.strides[0]
    width = 4 if plan.d % 4 == 0 else 1
    per_row = plan.dp // width
    read = (f"{src}[(({base}) + gr * {stride} + col) / 4u]" if width == 4
            else f"{src}[({base}) + gr * {stride} + col]")
    kind = "vec4<f16>" if width == 4 else "f16"
    put = "".join(f" sh_kv[ix + {i}u] = x{'.' + 'xyzw'[i] if width == 4 else ''};"
                  for i in range(width))
    return f"""  for (var e = tid; e < {rows * per_row}u; e += {plan.threads}u) {{
    let r = e / {per_row}u; let col = (e % {per_row}u) * {width}u; let gr = {row0} + r;
    var x = {kind}();
    if (gr < {length} && col < {plan.d}u) {{ x = {read}; }}
    let ix = {dst} + r * {st}u + col;{put}
  }}"""


def stage_q_passes(plan: SMPlan, left: str) -> list[str]:
    """q staged in passes of plan.q_width head-dim columns (BQ rows at once do not fit the
    K/V area), each pass followed by the loads of its q fragments into registers
    (q_i_c, `left` matrices) at the row group's base `qbase`."""
    width, fq = plan.q_width, plan.fq
    qst = width + _PAD_F16
    vec = 4 if plan.d % 4 == 0 else 1
    kind = "vec4<f16>" if vec == 4 else "f16"
    lines = []
    for c0 in range(0, plan.dp, width):
        n = min(width, plan.dp - c0)
        per_row = n // vec
        read = ("q[(q_base + gr * params.q_sl + col) / 4u]" if vec == 4
                else "q[q_base + gr * params.q_sl + col]")
        put = "".join(f" sh_kv[ix + {j}u] = x{'.' + 'xyzw'[j] if vec == 4 else ''};"
                      for j in range(vec))
        lines += [f"  for (var e = tid; e < {plan.bq * per_row}u; e += {plan.threads}u) {{",
                  f"    let r = e / {per_row}u; let col = {c0}u + (e % {per_row}u) * {vec}u; "
                  "let gr = q0 + r;",
                  f"    var x = {kind}();",
                  f"    if (gr < params.lq && col < {plan.d}u) {{ x = {read}; }}",
                  f"    let ix = r * {qst}u + col - {c0}u;{put}", "  }", "  workgroupBarrier();"]
        lines += [f"  let q_{i}_{c} = subgroupMatrixLoad<{left}>(&sh_kv, "
                  f"qbase + {16 * i * qst + 16 * c - c0}u, false, {qst}u);"
                  for i in range(fq) for c in range(c0 // 16, (c0 + n) // 16)]
        lines.append("  workgroupBarrier();")
    return lines


def fetch_rows(plan: SMPlan, src: str, tag: str, dst: str, rows: int, row0: str, length: str,
           base: str, stride: str) -> tuple[list[str], list[str], list[str]]:
    """`stage_rows` split in two for prefetching: (register declarations, global loads into
    them, their stores into sh_kv at `dst`); each invocation holds a fixed number of loads."""
    st = plan.strides[0]
    width = 4 if plan.d % 4 == 0 else 1
    per_row = plan.dp // width
    total = rows * per_row
    kind = "vec4<f16>" if width == 4 else "f16"
    decls, loads, stores = [], [], []
    for i in range(math.ceil(total / plan.threads)):
        reg = f"pf_{tag}{i}"
        e = f"(tid + {i * plan.threads}u)"
        inside = f"{e} < {total}u && " if total % plan.threads else ""
        read = (f"{src}[(({base}) + gr * {stride} + col) / 4u]" if width == 4
                else f"{src}[({base}) + gr * {stride} + col]")
        decls.append(f"  var {reg} = {kind}();")
        loads.append(f"""    {{
      let r = {e} / {per_row}u; let col = ({e} % {per_row}u) * {width}u; let gr = kn + r;
      {reg} = {kind}();
      if ({inside}gr < {length} && col < {plan.d}u) {{ {reg} = {read}; }}
    }}""")
        put = "".join(f" sh_kv[ix + {j}u] = {reg}{'.' + 'xyzw'[j] if width == 4 else ''};"
                      for j in range(width))
        guard = f"if ({e} < {total}u) " if total % plan.threads else ""
        stores.append(f"    {guard}{{ let ix = {dst} + {e} / {per_row}u * {st}u + "
                      f"({e} % {per_row}u) * {width}u;{put} }}")
    return decls, loads, stores


def _columns(plan: SMPlan) -> list[str]:
    """The lane's bk/2 score columns, two lanes a row (rows 8-15 two ahead with `rotate`)."""
    half = plan.bk // 2
    if plan.runs:  # a run of adjacent columns: adjacent S reads and P writes
        per = plan.bk // plan.lanes_per_row
        return [f"side * {per}u + {j}u" for j in range(per)]
    if plan.split > 1:
        lanes = plan.lanes_per_row
        return [f"{lanes * j}u + side" for j in range(plan.bk // lanes)]
    return [f"2u * (({j}u + row / 8u) % {half}u) + side" if plan.rotate else f"{2 * j}u + side"
            for j in range(half)]


def _row_bases(plan: SMPlan, i: int) -> list[str]:
    """Where the lane's row of fragment i starts in S and in P."""
    _, ss, ps = plan.strides
    return [f"let s_at = sbase + (row + {16 * i}u) * {ss}u;",
            f"let p_at = pbase + (row + {16 * i}u) * {ps}u;"]


def raise_max(i: int, split: int = 1, headroom: int = 8) -> list[str]:
    """The running max m_i raised to the tile's `top` where it grew by more than `headroom`
    (l_i and, through the rescale flag, the O fragments scaled by alpha_i; with a split,
    alpha_i goes to sh_alpha for the row group's other subgroups)."""
    shared = ([f"if (side == 0u) {{ sh_alpha[srow + {16 * i}u] = alpha_{i}; }}"]
              if split > 1 else [])
    return [f"alpha_{i} = 1.0;", f"if (top > m_{i} + {headroom}.0) {{",
            f"  if (m_{i} > -3.0e38) {{ rescale[0] = 1u; }}",
            f"  alpha_{i} = exp2(m_{i} - top);", f"  l_{i} *= alpha_{i};", f"  m_{i} = top;", "}",
            *shared]


def row_shuffles(plan: SMPlan, name: str, join: Callable[[str, str], str]) -> list[str]:
    """`name` combined over the lanes that share a row (all but the last xor step, which
    callers write themselves)."""
    return [f"{name} = {join(name, f'subgroupShuffleXor({name}, {step}u)')};"
            for step in (1 << b for b in range(plan.lanes_per_row.bit_length() - 2))]


def _block(lines: list[str]) -> str:
    return "    {\n" + "\n".join("      " + x for x in lines) + "\n    }"


def softmax_in_registers(plan: SMPlan, i: int) -> str:
    """One row fragment's online softmax with the lane's bk/2 scores read once into registers
    (unrolled), then P written from them: one pass over S instead of two."""
    lines = [*_row_bases(plan, i), "var top = -3.0e38;"]
    for j, c in enumerate(_columns(plan)):
        lines += [f"let c{j} = {c};", f"let in{j} = k0 + c{j} < params.lk;",
                  f"let x{j} = select(-3.0e38, sh_s[s_at + c{j}] * params.scale, in{j});",
                  f"top = max(top, x{j});"]
    last = plan.lanes_per_row // 2
    lines += [*row_shuffles(plan, "top", _max),
              f"top = max(top, subgroupShuffleXor(top, {last}u));",
              *raise_max(i, plan.split, plan.headroom)]
    for j in range(len(_columns(plan))):
        lines += [f"let p{j} = select(0.0, exp2(x{j} - m_{i}), in{j});", f"l_{i} += p{j};",
                  f"sh_p[p_at + c{j}] = f16(p{j});"]
    return _block(lines)


def _max(a: str, b: str) -> str:
    return f"max({a}, {b})"


def _tree(join: Callable[[str, str], str], terms: list[str]) -> str:
    """`terms` combined pairwise, level by level (a dependency chain of log2 n, not n)."""
    while len(terms) > 1:
        pairs = [join(a, b) for a, b in zip(terms[::2], terms[1::2])]
        terms = pairs + terms[len(pairs) * 2:]
    return terms[0]


def lean_softmax(plan: SMPlan, i: int) -> str:
    """softmax_in_registers with shorter dependency chains: the scores read unscaled (a full
    key tile without the bounds selects), the row max and sum as trees, P = exp2(fma(s,
    scale, -m)). Needs scale > 0 (max(s) * scale is then the scaled row max)."""
    half = len(_columns(plan))
    lines = [*_row_bases(plan, i)]
    lines += [f"let c{j} = {c};" for j, c in enumerate(_columns(plan))]
    lines += [f"var x{j}: f32;" for j in range(half)]
    lines.append(f"if (k0 + {plan.bk}u <= params.lk) {{")
    lines += [f"  x{j} = sh_s[s_at + c{j}];" for j in range(half)]
    lines.append("} else {")
    lines += [f"  x{j} = select(-3.0e38, sh_s[s_at + c{j}], k0 + c{j} < params.lk);"
              for j in range(half)]
    lines.append("}")
    top = _tree(lambda a, b: f"max({a}, {b})", [f"x{j}" for j in range(half)])
    last = plan.lanes_per_row // 2
    lines += [f"var top = {top};", *row_shuffles(plan, "top", _max),
              f"top = max(top, subgroupShuffleXor(top, {last}u)) * params.scale;",
              *raise_max(i, plan.split, plan.headroom), f"let neg_m = -m_{i};"]
    lines += [f"let p{j} = exp2(fma(x{j}, params.scale, neg_m));" for j in range(half)]
    lines.append(f"l_{i} += {_tree(lambda a, b: f'({a} + {b})', [f'p{j}' for j in range(half)])};")
    lines += [f"sh_p[p_at + c{j}] = f16(p{j});" for j in range(half)]
    return _block(lines)


def masked_softmax(plan: SMPlan, i: int) -> str:
    """lean_softmax for a masked plan: each score scaled and biased (the tile's key bias in
    sh_bias: -inf where a key is dropped or past Lk, so no bounds select) as it is read;
    any scale. A row with every key so far dropped keeps its max at -3e38 and P at 0."""
    half = len(_columns(plan))
    lines = [*_row_bases(plan, i)]
    for j, c in enumerate(_columns(plan)):
        lines += [f"let c{j} = {c};",
                  f"let x{j} = fma(sh_s[s_at + c{j}], params.scale, sh_bias[c{j}]);"]
    top = _tree(_max, [f"x{j}" for j in range(half)])
    last = plan.lanes_per_row // 2
    lines += [f"var top = {top};", *row_shuffles(plan, "top", _max),
              f"top = max(top, subgroupShuffleXor(top, {last}u));",
              *raise_max(i, plan.split, plan.headroom), f"let neg_m = -m_{i};"]
    lines += [f"let p{j} = exp2(x{j} + neg_m);" for j in range(half)]
    lines.append(f"l_{i} += {_tree(lambda a, b: f'({a} + {b})', [f'p{j}' for j in range(half)])};")
    lines += [f"sh_p[p_at + c{j}] = f16(p{j});" for j in range(half)]
    return _block(lines)


def key_bias(plan: SMPlan) -> str:
    """A masked plan's WGSL function giving a key's bias in log2 units, as the scores are:
    the additive mask times log2 e, or 0 / -inf for a kept / dropped key; -inf past Lk."""
    read = "mask[m_base + key * params.m_sk]"
    keep = (f"{read} * 1.4426950408889634" if plan.mask == 1
            else f"select(neg_inf, 0.0, {read} != 0u)")
    return f"""fn key_bias(m_base: u32, key: u32) -> f32 {{
  var inf_bits = 0x7f800000u; // a var: Tint refuses inf as a constant expression
  let neg_inf = -bitcast<f32>(inf_bits);
  if (key >= params.lk) {{ return neg_inf; }}
  return {keep};
}}
"""


def through_scratch(plan: SMPlan, lane_code: Callable[[int, int, int], str],
                     reload: bool) -> list[str]:
    """Code that moves the O fragments through this subgroup's S scratch, FK fragments at a
    time, with `lane_code(i, n, c0)` (row fragment i, n columns from column c0; a lane
    works on its own rows) between barriers; `reload` loads them back."""
    ss = plan.strides[1]
    base = "sbase" if plan.split == 1 else "scol"  # a split's subgroup: its S columns
    nd, step = plan.dp // 16 // plan.split, plan.fk // plan.split
    lines = []
    for c0 in range(0, nd, step):
        chunk = range(c0, min(c0 + step, nd))
        for i in range(plan.fq):
            lines += [f"  subgroupMatrixStore(&sh_s, {base} + {16 * i * ss + 16 * (c - c0)}u, "
                      f"o_{i}_{c}, false, {ss}u);" for c in chunk]
        lines.append("  workgroupBarrier();")
        lines += [lane_code(i, 16 * len(chunk), 16 * c0) for i in range(plan.fq)]
        lines.append("  workgroupBarrier();")
        if reload:
            for i in range(plan.fq):
                lines += [f"  o_{i}_{c} = subgroupMatrixLoad<{RESULT}>(&sh_s, "
                          f"{base} + {16 * i * ss + 16 * (c - c0)}u, false, {ss}u);"
                          for c in chunk]
    return lines
