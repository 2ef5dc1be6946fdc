"""The K loop of the subgroup-matrix kernels (gpustd/gemm/matrix_codegen.py assembles them):
each operand's staging (global loads into registers, registers into workgroup memory), the
unrolled fragment loads and multiply-accumulates of one staged K step, the loop around them
(single or double buffered, with or without prefetch) and the K range a workgroup walks (all
of K, or its split's slice). WGSL text from a MatrixTile and its Operands
(gpustd/gemm/matrix_tile.py).
"""

from __future__ import annotations

from .matrix_loads import fragment_stride, load_type
from .matrix_tile import MatrixTile, Operand

__all__ = ["k_range", "main_loop", "multiply_code", "stage_code"]

_PARTS = {1: ("",), 4: (".x", ".y", ".z", ".w"),
          8: (".lo.x", ".lo.y", ".lo.z", ".lo.w", ".hi.x", ".hi.y", ".hi.z", ".hi.w")}


def stage_code(op: Operand, tile: MatrixTile) -> tuple[list[str], list[str], list[str]]:
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


def multiply_code(tile: MatrixTile, a: Operand, b: Operand) -> str:
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


def main_loop(tile: MatrixTile, size_a: int, size_b: int, body: str, first: str = "",
               fetch: str = "fetch") -> str:
    """The K loop: stage, multiply, fetch the next step in between; `first` ("k_first + " in a
    split-K kernel) offsets every step's K; `fetch` names the step's global loads."""
    bk = tile.step
    if tile.double and not tile.prefetch:
        # the next step fetched and staged into the other buffer before this step's
        # multiplies: the buffer it fills was last read before the previous step's barrier
        return f"""  stage(0u, 0u);
  workgroupBarrier();
  for (var t = 0u; t < steps; t++) {{
    let cur_a = (t & 1u) * {size_a}u;
    let cur_b = (t & 1u) * {size_b}u;
    if (t + 1u < steps) {{
      k0 = {first}(t + 1u) * {bk}u;
      {fetch}();
      stage({size_a}u - cur_a, {size_b}u - cur_b);
    }}
{body}
    workgroupBarrier();
  }}"""
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


def k_range(tile: MatrixTile, k_total: str, split: str) -> str:
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
