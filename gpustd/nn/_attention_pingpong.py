"""The key loop of the matrix-unit flash attention with its subgroups in two halves a phase
apart (`SMPlan.pingpong`; FlashAttention-3's ping-pong schedule, written for WGSL's subgroup
matrices). gpustd/nn/_attention_subgroup_matrix.py generates the pieces (S = q k^T, the
softmax, O += P v, the rescale) and, for such a plan, this loop around them.

In the plain loop every subgroup computes S, then every subgroup runs the softmax on the
lanes, then every subgroup multiplies P by v: with one 512-invocation workgroup an SM, the
matrix units idle through the softmax and the lanes through the products. Here the rows'
subgroups form two halves, and tile t of the loop has two phases between barriers:

    phase a:  half 0: O += P(t-1) v(t-1), S(t) = q k(t)^T   half 1: softmax of S(t-1)
    phase b:  half 0: softmax of S(t)                        half 1: O += P(t-1) v(t-1),
                                                                     S(t) = q k(t)^T

so each phase has matrix work and softmax work side by side. Workgroup memory holds k(t)
and v(t-1): tile t's k is read by half 0 in phase a and half 1 in phase b, the last tile's
v by both in the same phases; both are stored from the prefetch registers at the tile's
start (k of t, v of t - 1), so the loop runs over tiles + 1 steps and holds no more than
the plain one. Each half raises its own rescale flag (rescale[half]); a half's O fragments
are rescaled, through its own S scratch, right after the phase that ran its softmax (the
flag read with workgroupUniformLoad, the barrier between the phases).

Matrix operations inside a branch on the half are not workgroup-uniform control flow, which
Tint's subgroup-matrix uniformity check refuses by default; each branch is uniform within a
subgroup (the halves are whole subgroups), which is what the matrix units need, so the
kernel turns that diagnostic off.
"""

from __future__ import annotations

from ._attention_sm_plan import SMPlan

__all__ = ["DIAGNOSTIC", "pingpong_loop"]

DIAGNOSTIC = "diagnostic(off, chromium.subgroup_matrix_uniformity);"


def _indent(lines: list[str], by: str) -> str:
    return "\n".join(by + x if x else x for x in "\n".join(lines).split("\n"))


def _guarded(lines: list[str], half: int) -> list[str]:
    """`lines` (workgroup barriers among them) with everything but the barriers done by one
    half's subgroups only: every invocation still meets every barrier."""
    out: list[str] = []
    block: list[str] = []
    for line in lines + ["  workgroupBarrier();"]:
        if line.strip() == "workgroupBarrier();":
            if block:
                out += [f"  if (half == {half}u) {{", *("  " + b for b in block), "  }"]
                block = []
            out.append(line)
        else:
            block.append(line)
    return out[:-1]


def pingpong_loop(plan: SMPlan, *, scores: list[str], softmax: list[str], products: list[str],
                  rescale: list[str], fetches: list[tuple[list[str], list[str], list[str]]]
                  ) -> str:
    """The loop over key tiles for a pingpong plan. scores, softmax, products: the blocks of
    S = q k^T, of the softmax (reading `k0`, raising rescale[half]) and of O += P v for one
    subgroup; rescale: the O fragments' rescale through the S scratch (with its barriers);
    fetches: fetch_rows's (declarations, loads, stores) for k and for v."""
    (k_decl, k_loads, k_stores), (v_decl, v_loads, v_stores) = fetches
    bk = plan.bk
    matrix_work = ["      if (t > 0u) {", _indent(products, "  "), "      }",
                   "      if (t < tiles) {", _indent(scores, "  "), "      }"]
    lines = [f"  let half = sg / {plan.sg // 2}u; // the rows' two halves, a phase apart",
             "  let tiles = (params.lk + " + f"{bk - 1}u) / {bk}u;",
             *k_decl, *v_decl,
             "  {", "    let kn = 0u;", *k_loads, "  }",
             "  workgroupBarrier(); // q's fragments are loaded: k and v may take sh_kv",
             "  for (var t = 0u; t <= tiles; t++) {",
             "    if (tid == 0u) { rescale[1] = 0u; }",
             "    if (t < tiles) {", *k_stores, "    }",
             "    if (t > 0u) {", *v_stores, "    }",
             "    workgroupBarrier();",
             "    if (t + 1u < tiles) {", f"      let kn = (t + 1u) * {bk}u;", *k_loads, "    }",
             "    if (t < tiles) {", f"      let kn = t * {bk}u;", *v_loads, "    }",
             "    if (half == 0u) {",
             "      if (tid == 0u) { rescale[0] = 0u; }",
             *matrix_work,
             "    } else if (t > 0u) {",
             f"      let k0 = (t - 1u) * {bk}u;",
             _indent(softmax, "  "),
             "    }",
             "    if (workgroupUniformLoad(&rescale[1]) != 0u) {",
             _indent(_guarded(rescale, 1), "  "),
             "    }",
             "    if (half == 0u) {",
             "      if (t < tiles) {",
             f"        let k0 = t * {bk}u;",
             _indent(softmax, "    "),
             "      }",
             "    } else {",
             *matrix_work,
             "    }",
             "    if (workgroupUniformLoad(&rescale[0]) != 0u) {",
             _indent(_guarded(rescale, 0), "  "),
             "    }",
             "  }"]
    return "\n".join(lines)
