"""Tile plans for gpustd.nn.attention: which specialization of shaders/nn/attention.wgsl
runs a given head dim on a given device, chosen by a small cost model."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["Plan", "candidates", "cost", "cpu_plan", "plan_for", "subgroup_size"]

_NVIDIA = 0x10DE
_plans: dict[tuple[Any, ...], Plan] = {}


@dataclass(frozen=True)
class Plan:
    """Tile shape of one kernel specialization: the shader's override constants (the field
    names) and whether row reductions use subgroup shuffles."""

    D: int  # head dim
    RG: int  # query rows / 4 per workgroup (BQ = 4 RG)
    CS: int  # keys / 4 per tile (BK = 4 CS); the workgroup has RG * CS invocations
    NV: int  # output dim vec4s per invocation
    NDG: int  # output dim groups (NV * NDG * 4 >= D)
    DCH: int  # head dims per staged chunk of q and k (a multiple of 4)
    KB: int  # keys of v staged at a time (a multiple of 4 KS dividing BK)
    subgroups: bool = field(default=False)
    KS: int = 1  # key slices of the output phase (NDG * KS <= CS), summed after the last tile
    PF: int = 0  # 1: k and v prefetched into registers a phase ahead (one chunk, one v block)

    def __post_init__(self) -> None:
        sizes = [self.D, self.RG, self.CS, self.NV, self.NDG, self.DCH, self.KB, self.KS]
        if not (4 * self.NV * self.NDG >= self.D and 1 <= self.NV <= 8
                and self.NDG * self.KS <= self.CS and (4 * self.CS) % self.KB == 0
                and self.KB % (4 * self.KS) == 0 and self.DCH % 4 == 0
                and min(sizes) >= 1 and (not self.subgroups or self.CS & (self.CS - 1) == 0)
                and (not self.PF or self.prefetchable())):
            raise ValueError(f"attention: inconsistent tile plan {self}")

    def prefetchable(self) -> bool:
        """Whether PF = 1 is allowed: one q/k chunk, v in one block, at most 4 vec4s of each
        per invocation (the shader's Stage)."""
        wg, bk = self.RG * self.CS, 4 * self.CS
        return (self.DCH >= self.D and self.KB == bk and self.DCH * self.CS <= 4 * wg
                and bk * self.NV * self.NDG <= 4 * wg)

    def kv_len(self) -> int:
        return max((self.DCH | 1) * self.CS, self.KB * self.NV * self.NDG)

    def constants(self) -> dict[str, int]:
        values = {k: int(v) for k, v in asdict(self).items() if k != "subgroups"}
        return {**values, "KV_LEN": self.kv_len()}

    def workgroup_bytes(self) -> int:
        vec4s = (self.DCH | 1) * self.RG + self.kv_len() + 4 * self.CS * self.RG + self.RG
        return 16 * (vec4s + (0 if self.subgroups else self.CS * self.RG))


def subgroup_size(device: Any) -> int:
    """The smallest subgroup the device may use (0 without subgroup support)."""
    if not getattr(device, "has_subgroups", False):
        return 0
    info = device.info.adapter.info
    if info.get("vendor_id") == _NVIDIA:
        return 32  # fixed on every NVIDIA GPU, though wgpu reports WebGPU's floor of 4
    # wgpu-py 0.32 spells the key "stackgroup_min_size"; 4 is WebGPU's floor.
    return int(info.get("subgroup_min_size", info.get("stackgroup_min_size", 4)))


def candidates(d: int, budget: int, max_invocations: int, subgroup: int = 0) -> list[Plan]:
    """Tile plans for head dim `d` that the shader's invariants and the workgroup memory
    allow: for each register tile and number of output key slices (KS, a power of two), the
    largest chunks of q/k dims and of v keys that fit, and its prefetching twin (PF = 1)
    where one is allowed. Row reductions use subgroups where CS
    is a power of two <= `subgroup`."""
    d4 = math.ceil(d / 4)
    found = []
    for nv in range(1, 9):
        ndg = math.ceil(d4 / nv)
        if math.ceil(d4 / ndg) != nv:
            continue  # a whole vec4 of padding: a smaller nv gives the same tile
        for rg in (32, 16, 8, 4):
            for cs in sorted({ndg, 8, 16, 32}):
                if cs < ndg or rg * cs > min(256, max_invocations):
                    continue
                shuffles = cs & (cs - 1) == 0 and cs <= subgroup
                slices = (ks for ks in (1, 2, 4, 8, 16) if ndg * ks <= cs)
                plans = (_fit(d, rg, cs, nv, ndg, budget, shuffles, ks) for ks in slices)
                for plan in plans:
                    if plan is not None:
                        found += [plan, replace(plan, PF=1)] if plan.prefetchable() else [plan]
    return found


def _fit(d: int, rg: int, cs: int, nv: int, ndg: int, budget: int,
         shuffles: bool, ks: int = 1) -> Plan | None:
    """The plan with the fewest q/k chunks, then the most v keys per block, that fits."""
    bk = 4 * cs
    fixed = 4 * cs * rg + rg + (0 if shuffles else cs * rg)
    for nch in range(1, math.ceil(d / 4) + 1):
        dch = 4 * math.ceil(d / nch / 4)
        room = budget // 16 - (dch | 1) * rg - fixed
        blocks = [x for x in range(4 * ks, bk + 1, 4 * ks)
                  if bk % x == 0 and x * nv * ndg <= room]
        if (dch | 1) * cs <= room and blocks:
            return Plan(d, rg, cs, nv, ndg, dch, max(blocks), shuffles, ks)
    return None


def cost(plan: Plan, rows: int, batch_heads: int, keys: int = 4096) -> float:
    """Modelled time (arbitrary units) for `batch_heads` heads of `rows` queries per key
    (`keys` keys per head).

    Per (query, key) pair: an FMA per padded head dim in each phase; workgroup-memory vec4
    loads (weighted 4: they issue far slower than FMAs) of 1 per 8 FMAs for scores and
    (1 + NV) per 16 NV for the output; output-phase invocations left idle (half cost);
    each tile's barriers and global loads spread over its BQ*BK pairs, the loads a quarter
    as costly when prefetched (PF); the KS partial sums' combination once per workgroup.
    Measured on an H200 (Vulkan): workgroups under 256 invocations hide latency poorly, and
    a CS (NDG) that is not a power of two runs ~1.6x (~1.2x) slower; one such plan, (RG, CS,
    NV, NDG) = (32, 8, 2, 5) with subgroups, ran 4x slower than its neighbours. Grids below
    about one workgroup per SM of a large GPU leave SMs idle, so time scales with
    1 / min(workgroups, 100).

    The weights are calibrated on an H100 sweep (tools/attention_sweep.py); its figures are
    in bench/NOTES.md, "Calibration tables moved out of docstrings"."""
    bq, bk, wg = 4 * plan.RG, 4 * plan.CS, plan.RG * plan.CS
    nch = math.ceil(plan.D / plan.DCH)
    dims_s, dims_o = nch * plan.DCH, 4 * plan.NV * plan.NDG
    scores = dims_s * (1 + 4 / 8)
    output = dims_o * (1 + 4 * (1 + plan.NV) / (16 * plan.NV))
    output *= 1 + 0.5 * (wg / (plan.RG * plan.NDG * plan.KS) - 1)
    barriers = 2 * nch + 2 * bk / plan.KB + (0 if plan.subgroups else 2)
    per_tile = barriers * 40 + (0 if plan.subgroups else 4 * plan.CS)
    loads = 2 * (bk * (dims_s + dims_o) + (nch > 1) * bq * dims_s) / wg
    per_tile += loads * (0.25 if plan.PF else 1.0)
    combine = 0 if plan.KS == 1 else plan.NV * (400 + 16 * (plan.KS - 1))
    per_pair = scores + output + 8 + wg * (per_tile / (bq * bk) + combine / (bq * keys))
    per_pair *= (1 + 64 / wg) * (256 / wg) ** 0.5 * (1.05 if plan.NV > 4 else 1.0)
    if plan.CS & (plan.CS - 1):
        per_pair *= 1.6
    if plan.NDG & (plan.NDG - 1):
        per_pair *= 1.2
    groups = math.ceil(rows / bq) * batch_heads
    return per_pair * groups * bq / min(groups, 100)


def plan_for(d: int, device: Any, rows: int = 4096, batch_heads: int = 1,
             keys: int | None = None) -> Plan:
    """The tile plan (cached) for head dim `d`, `rows` queries and `keys` keys (default
    `rows`) per head and `batch_heads` heads on `device`: the cheapest under `cost` that
    fits its workgroup memory."""
    keys = rows if keys is None else keys
    budget = device.limits["max-compute-workgroup-storage-size"]
    invocations = device.limits["max-compute-invocations-per-workgroup"]
    subgroup = subgroup_size(device)
    key = (d, budget, invocations, subgroup, rows, batch_heads, keys)
    if key not in _plans:
        found = candidates(d, budget, invocations, subgroup)
        if not found:
            raise ValueError(f"attention: head dim {d} needs more workgroup memory than this "
                             f"device's {budget} bytes")
        on_cpu = cpu_plan(d, subgroup) if device.info.type == "cpu" else None
        if on_cpu is not None and on_cpu.workgroup_bytes() <= budget:
            _plans[key] = on_cpu
        else:
            _plans[key] = min(found, key=lambda p: cost(p, rows, batch_heads, keys))
    return _plans[key]


def cpu_plan(d: int, subgroup: int = 0) -> Plan | None:
    """A CPU adapter's plan: 64 rows of queries by 16 keys a tile in a workgroup of 64 (16 x
    4), each invocation 4 rows by 4 vec4s of dims, q and k staged 32 dims at a time. Up to 64
    dims every head dim runs this one kernel on a CPU (attention.py reads D, NDG and KB from
    the params there and sizes the work memory for NDG = CS), to 128 dims 8 vec4s. On
    lavapipe the GPU's plans of 128 invocations ran the bundled model's attention 2-3x slower:
    llvmpipe runs a workgroup's invocations eight at a time and pays for each barrier per group
    of eight (bench/NOTES.md, "CI's time on lavapipe")."""
    if d > 128:
        return None  # the GPU's plans (head dims from 256 on run as two GEMMs anyway)
    nv = 4 if d <= 64 else 8
    ndg = math.ceil(math.ceil(d / 4) / nv)
    return Plan(d, 16, 4, nv, ndg, min(32, 4 * math.ceil(d / 4)), 16, subgroups=4 <= subgroup)
